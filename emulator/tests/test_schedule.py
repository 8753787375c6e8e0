"""getSchedule: the sample's shape, availability digits, private items and the limits."""

from __future__ import annotations

from typing import Any

import pytest

from graph_emulator.config import EmulatorConfig


def request_body(tenant: Any, **extra: Any) -> dict[str, Any]:
    return {
        "schedules": [tenant.room.upn, tenant.tentative_room.upn],
        "startTime": {"dateTime": "2026-03-17T08:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2026-03-17T12:00:00", "timeZone": "UTC"},
        "availabilityViewInterval": 30,
    } | extra


async def test_matches_the_sample_shape(tenant: Any, graph: Any, load_sample: Any) -> None:
    calendars = tenant.state.calendars
    # Berlin is UTC+1 in March: 09:00-10:00 local = slots 0-1.
    tenant.book(tenant.room, "2026-03-17T09:00:00", "2026-03-17T10:00:00")
    calendars.create_event(
        tenant.tentative_room.id,
        {
            "subject": "Private chat",
            "sensitivity": "private",
            "start": {"dateTime": "2026-03-17T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-17T10:30:00", "timeZone": "UTC"},
        },
        organizer=tenant.person.upn,
    )
    oof = calendars.create_event(
        tenant.room.id,
        {
            "subject": "Away",
            "showAs": "oof",
            "start": {"dateTime": "2026-03-17T11:30:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-17T12:00:00", "timeZone": "UTC"},
        },
    )
    assert oof["showAs"] == "oof"
    response = await graph.http.post(
        f"/v1.0/users/{tenant.person.upn}/calendar/getSchedule", json=request_body(tenant)
    )
    assert response.status_code == 200, response.text
    sample = load_sample("getschedule-response.json")
    body = response.json()
    assert set(body) == set(sample)
    room, tentative = body["value"]
    assert set(room) == set(sample["value"][0])
    assert room["availabilityView"] == "22000003"
    assert set(room["scheduleItems"][0]) == set(sample["value"][0]["scheduleItems"][0])
    assert room["scheduleItems"][0]["start"]["dateTime"] == "2026-03-17T08:00:00.0000000"
    assert room["workingHours"] == sample["value"][0]["workingHours"]
    # AutoUpdate room: tentative; private kept (RemovePrivateProperty off) and subject hidden.
    assert tentative["availabilityView"] == "00001000"
    item = tentative["scheduleItems"][0]
    assert set(item) == set(sample["value"][0]["scheduleItems"][1])
    assert item["isPrivate"] is True
    assert item["status"] == "tentative"
    assert tentative["workingHours"]["timeZone"] == {"name": "GMT Standard Time"}


@pytest.mark.parametrize("digit", ["0", "4"])
async def test_working_elsewhere_digit_is_configurable(
    tenant_factory: Any, graph_factory: Any, digit: str
) -> None:
    tenant = tenant_factory(EmulatorConfig(schedule_working_elsewhere_digit=digit))
    tenant.state.calendars.create_event(
        tenant.room.id,
        {
            "subject": "Remote",
            "showAs": "workingElsewhere",
            "start": {"dateTime": "2026-03-17T08:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-17T09:00:00", "timeZone": "UTC"},
        },
    )
    async with graph_factory(tenant) as graph:
        response = await graph.http.post(
            f"/v1.0/users/{tenant.room.upn}/calendar/getSchedule", json=request_body(tenant)
        )
    room = response.json()["value"][0]
    assert room["availabilityView"] == digit * 2 + "000000"
    assert room["scheduleItems"][0]["status"] == "workingElsewhere"


async def test_the_window_must_be_shorter_than_62_days(tenant: Any, graph: Any) -> None:
    path = f"/v1.0/users/{tenant.person.upn}/calendar/getSchedule"
    # 17 March 08:00 UTC + 62 days = 18 May 08:00 UTC.
    exactly = request_body(tenant, endTime={"dateTime": "2026-05-18T08:00:00", "timeZone": "UTC"})
    refused = await graph.http.post(path, json=exactly)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "ErrorTimeIntervalTooBig"
    shorter = request_body(tenant, endTime={"dateTime": "2026-05-18T07:30:00", "timeZone": "UTC"})
    accepted = await graph.http.post(path, json=shorter)
    assert accepted.status_code == 200
    assert len(accepted.json()["value"][0]["availabilityView"]) == 61 * 48 + 47


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"schedules": []}, "ErrorInvalidParameter"),
        ({"schedules": [f"r{n}@contoso.example" for n in range(21)]}, "ErrorInvalidParameter"),
        ({"availabilityViewInterval": 4}, "ErrorInvalidParameter"),
        ({"availabilityViewInterval": 1441}, "ErrorInvalidParameter"),
        (
            {"endTime": {"dateTime": "2026-05-19T08:00:00", "timeZone": "UTC"}},
            "ErrorTimeIntervalTooBig",
        ),
        (
            {"endTime": {"dateTime": "2026-03-17T07:00:00", "timeZone": "UTC"}},
            "ErrorInvalidTimeInterval",
        ),
        ({"startTime": "tomorrow"}, "ErrorInvalidParameter"),
    ],
)
async def test_limits(tenant: Any, graph: Any, extra: dict[str, Any], code: str) -> None:
    response = await graph.http.post(
        f"/v1.0/users/{tenant.person.upn}/calendar/getSchedule", json=request_body(tenant, **extra)
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_unknown_and_out_of_scope_schedules_get_per_schedule_errors(
    tenant: Any, graph: Any
) -> None:
    await graph.as_app("scoped")
    response = await graph.http.post(
        f"/v1.0/users/{tenant.room.upn}/calendar/getSchedule",
        json=request_body(
            tenant, schedules=[tenant.room.upn, "ghost@contoso.example", tenant.other_room.upn]
        ),
    )
    assert response.status_code == 200
    ok, ghost, other = response.json()["value"]
    assert "error" not in ok
    assert ghost["error"]["responseCode"] == "ErrorMailRecipientNotFound"
    assert other["error"]["responseCode"] == "ErrorAccessDenied"
