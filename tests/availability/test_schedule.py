"""``POST /v1/tenants/{t}/getSchedule``: Graph's request and response shape, from the cache."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from bookingcache.api.schedule import ScheduleResponse
from bookingcache.domain.events import Sensitivity, ShowAs
from tests.support.availability import Tenant, event
from tests.support.problems import assert_problem
from tests.support.samples import sample

pytestmark = pytest.mark.pinned_dates

GRAPH_DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}$")


def request(
    *schedules: str,
    start: str = "2026-11-23T08:00:00",
    end: str = "2026-11-23T12:00:00",
    zone: str = "UTC",
    interval: int | None = 30,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedules": list(schedules),
        "startTime": {"dateTime": start, "timeZone": zone},
        "endTime": {"dateTime": end, "timeZone": zone},
    }
    if interval is not None:
        body["availabilityViewInterval"] = interval
    return body


async def booked_room(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example", name="Room A1")
    await tenant.sync(
        "a1@contoso.example",
        [
            event("busy", "08:00", "09:00", title="Kari Nordmann"),
            event("free", "09:00", "10:00", show_as=ShowAs.FREE, title="Hold"),
            event("gone", "09:30", "10:00", cancelled=True),
            event(
                "private",
                "10:00",
                "10:30",
                show_as=ShowAs.TENTATIVE,
                sensitivity=Sensitivity.PRIVATE,
                title="Secret",
            ),
            event("away", "11:10", "11:20", show_as=ShowAs.OOF, title="Away"),
            event("remote", "11:30", "12:00", show_as=ShowAs.WORKING_ELSEWHERE, title="Remote"),
        ],
    )


async def test_view_and_items_match_a_hand_computed_answer(tenant: Tenant) -> None:
    await booked_room(tenant)
    response = await tenant.post("/getSchedule", request("a1"))
    assert response.status_code == 200, response.text
    body = response.json()
    ScheduleResponse.model_validate(body)
    [schedule] = body["value"]
    # 30-minute slots from 08:00: busy busy, free (free + cancelled), free, tentative, free,
    # oof in part of the 11:00 slot, working elsewhere (0 in current Graph).
    assert schedule["scheduleId"] == "a1"
    assert schedule["availabilityView"] == "22001030"
    assert "error" not in schedule
    items = schedule["scheduleItems"]
    assert [item["status"] for item in items] == [
        "busy",
        "free",
        "tentative",
        "oof",
        "workingElsewhere",
    ]
    assert items[0] == {
        "isPrivate": False,
        "status": "busy",
        "subject": "Kari Nordmann",
        "location": "Room A1",
        "start": {"dateTime": "2026-11-23T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "UTC"},
    }
    # Private items show neither subject nor location, as in Graph's sample.
    assert items[2] == {
        "isPrivate": True,
        "status": "tentative",
        "start": {"dateTime": "2026-11-23T10:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-23T10:30:00.0000000", "timeZone": "UTC"},
    }

    older = await tenant.client.post(
        f"{tenant.base}/getSchedule",
        params={"working_elsewhere_digit": "4"},
        json=request("a1"),
        headers=tenant.reader,
    )
    assert older.json()["value"][0]["availabilityView"] == "22001034"


async def test_shape_matches_graphs_sample(tenant: Tenant) -> None:
    expected = sample("getschedule-response.json")
    await booked_room(tenant)
    body = (await tenant.post("/getSchedule", request("a1", "nobody@contoso.example"))).json()
    assert body["@odata.context"] == expected["@odata.context"]
    sample_keys = set().union(*(entry.keys() for entry in expected["value"]))
    sample_item_keys = set().union(
        *(item.keys() for entry in expected["value"] for item in entry["scheduleItems"])
    )
    ours, unknown = body["value"]
    assert set(ours) <= sample_keys
    assert {"scheduleId", "availabilityView", "scheduleItems"} <= set(ours)
    for item in ours["scheduleItems"]:
        assert set(item) <= sample_item_keys
        for bound in ("start", "end"):
            assert set(item[bound]) == set(expected["value"][0]["scheduleItems"][0][bound])
            assert GRAPH_DATE_TIME.match(item[bound]["dateTime"])
    for entry in expected["value"]:
        for item in entry["scheduleItems"]:
            assert GRAPH_DATE_TIME.match(item["start"]["dateTime"])  # our pattern fits Graph's
    assert len(ours["availabilityView"]) == 8  # one digit per slot, like the expected's 8
    # An unknown schedule answers like Graph: an entry with an error, not a failed call.
    assert unknown["scheduleId"] == "nobody@contoso.example"
    assert unknown["error"]["responseCode"] == "ErrorInvalidUser"
    assert unknown["scheduleItems"] == []
    assert unknown["availabilityView"] == ""


async def test_mailboxes_zones_and_prefer_header(tenant: Tenant) -> None:
    await booked_room(tenant)
    # The window given in Berlin time (09:00-13:00 = 08:00-12:00 UTC), the mailbox in any case.
    response = await tenant.post(
        "/getSchedule",
        request(
            "A1@Contoso.example",
            start="2026-11-23T09:00:00.0000000",
            end="2026-11-23T13:00:00.0000000",
            zone="W. Europe Standard Time",
        ),
        Prefer='outlook.timezone="W. Europe Standard Time"',
    )
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == 'outlook.timezone="W. Europe Standard Time"'
    [schedule] = response.json()["value"]
    assert schedule["scheduleId"] == "A1@Contoso.example"
    assert schedule["availabilityView"] == "22001030"
    assert schedule["scheduleItems"][0]["start"] == {
        "dateTime": "2026-11-23T09:00:00.0000000",
        "timeZone": "W. Europe Standard Time",
    }
    hourly = await tenant.post("/getSchedule", request("a1", interval=60))
    assert hourly.json()["value"][0]["availabilityView"] == "2013"
    default = await tenant.post("/getSchedule", request("a1", interval=None))
    assert default.json()["value"][0]["availabilityView"] == "22001030"


async def test_never_synced_and_stale_calendars_say_so(tenant: Tenant) -> None:
    await tenant.put_room("b2", "b2@contoso.example")
    [never] = (await tenant.post("/getSchedule", request("b2"))).json()["value"]
    assert never["error"]["responseCode"] == "ErrorFreeBusyGenerationFailed"
    await booked_room(tenant)
    tenant.clock.advance(dt.timedelta(hours=2))
    [stale] = (await tenant.post("/getSchedule", request("a1"))).json()["value"]
    assert stale["availabilityView"] == "22001030"
    assert stale["error"]["responseCode"] == "ErrorStaleFreeBusyData"


async def test_up_to_100_schedules(tenant: Tenant) -> None:
    await booked_room(tenant)
    hundred = [f"room-{n}" for n in range(99)] + ["a1"]
    response = await tenant.post("/getSchedule", request(*hundred))
    assert response.status_code == 200, response.text
    value = response.json()["value"]
    assert len(value) == 100
    assert value[-1]["availabilityView"] == "22001030"
    assert_problem(await tenant.post("/getSchedule", request(*hundred, "one-more")), 422)


async def test_bad_requests_are_problems(tenant: Tenant) -> None:
    await booked_room(tenant)
    for interval in (4, 1441):
        body = assert_problem(
            await tenant.post("/getSchedule", request("a1", interval=interval)), 422
        )
        assert "5 and 1440" in body["detail"]
    long = request("a1", start="2026-11-01T00:00:00", end="2027-01-05T00:00:00")
    assert "62 days" in assert_problem(await tenant.post("/getSchedule", long), 422)["detail"]
    exactly_62_days = request("a1", start="2026-11-01T00:00:00", end="2027-01-02T00:00:00")
    assert_problem(await tenant.post("/getSchedule", exactly_62_days), 422)  # Graph: < 62 days
    just_under = request("a1", start="2026-11-01T00:00:00", end="2027-01-01T23:00:00")
    assert (await tenant.post("/getSchedule", just_under)).status_code == 200
    reversed_window = request("a1", start="2026-11-23T12:00:00", end="2026-11-23T08:00:00")
    assert_problem(await tenant.post("/getSchedule", reversed_window), 422)
    bad_zone = request("a1", zone="Mars/Olympus")
    assert (
        "Mars/Olympus" in assert_problem(await tenant.post("/getSchedule", bad_zone), 422)["detail"]
    )
    for start, end, zone in (
        ("9999-12-31T20:00:00", "9999-12-31T23:59:59", "Pacific/Kiritimati"),
        ("0001-01-01T00:00:00", "0001-01-01T10:00:00", "Pacific/Kiritimati"),
        ("1800-01-01T00:00:00", "1800-01-01T10:00:00", "UTC"),
    ):
        extreme = request("a1", start=start, end=end, zone=zone)
        assert_problem(await tenant.post("/getSchedule", extreme), 422)
    bad_time = request("a1", start="tomorrow")
    assert_problem(await tenant.post("/getSchedule", bad_time), 422)
    assert_problem(await tenant.post("/getSchedule", {"schedules": []}), 422)
    assert_problem(await tenant.post("/getSchedule", request()), 422)
    prefer = await tenant.post("/getSchedule", request("a1"), Prefer='outlook.timezone="Nowhere"')
    assert_problem(prefer, 422)
