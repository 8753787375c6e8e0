"""``POST /v1/tenants/{t}/availability`` (bulk) and ``GET .../rooms/{room}/events``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bookingcache.api.availability import BulkAvailabilityOut
from bookingcache.api.events import RoomEventsOut
from bookingcache.domain.events import Sensitivity, ShowAs
from tests.support.auth import ADMIN
from tests.support.availability import Tenant, at, event
from tests.support.problems import assert_problem

pytestmark = pytest.mark.pinned_dates

DAY = {"start": "2026-11-23T08:00:00Z", "end": "2026-11-23T18:00:00Z"}


async def three_rooms(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example", floor="1")
    await tenant.put_room("a2", "a2@contoso.example", floor="2")
    await tenant.put_room("b1", "b1@contoso.example", building="Annex", floor="1")
    await tenant.sync("a1@contoso.example", [event("m1", "08:30", "09:30")])
    await tenant.sync(
        "a2@contoso.example", [event("m2", "12:00", "13:00", show_as=ShowAs.TENTATIVE)]
    )
    await tenant.sync("b1@contoso.example", [])


async def test_bulk_by_rooms_and_by_building(tenant: Tenant) -> None:
    await three_rooms(tenant)
    response = await tenant.post("/availability", {"rooms": ["a2", "a1"], **DAY})
    assert response.status_code == 200, response.text
    body = response.json()
    BulkAvailabilityOut.model_validate(body)
    assert [(r["room_id"], r["status"], r["next_change_at"]) for r in body["rooms"]] == [
        ("a2", "free", "2026-11-23T12:00:00Z"),
        ("a1", "busy", "2026-11-23T09:30:00Z"),
    ]
    hq = (await tenant.post("/availability", {"building": "HQ", **DAY})).json()
    assert [r["room_id"] for r in hq["rooms"]] == ["a1", "a2"]
    first_floor = (await tenant.post("/availability", {"building": "HQ", "floor": "1"})).json()
    assert [r["room_id"] for r in first_floor["rooms"]] == ["a1"]
    # Each room gets the default window of its own day.
    assert first_floor["rooms"][0]["window"]["end"] == "2026-11-23T23:00:00Z"
    nowhere = (await tenant.post("/availability", {"building": "Nowhere"})).json()
    assert nowhere == {"rooms": []}


async def test_unknown_rooms_are_reported_not_dropped(tenant: Tenant) -> None:
    await three_rooms(tenant)
    response = await tenant.post("/availability", {"rooms": ["a1", "x9", "a2", "y7"]})
    body = assert_problem(response, 404)
    assert [(e["field"], e["type"]) for e in body["errors"]] == [
        ("body.rooms[1]", "not_found"),
        ("body.rooms[3]", "not_found"),
    ]
    assert "x9" in body["errors"][0]["message"]


async def test_bulk_bad_requests(tenant: Tenant) -> None:
    await three_rooms(tenant)
    bad_bodies: list[dict[str, Any]] = [
        {},
        {"rooms": ["a1"], "building": "HQ"},
        {"floor": "1"},
        {"rooms": []},
        {"rooms": ["a1"], "min_free_minutes": 0},
        {"rooms": ["a1"], "colour": "red"},
        {"rooms": ["a1"], "start": "2026-11-23T18:00:00Z", "end": "2026-11-23T08:00:00Z"},
    ]
    for bad in bad_bodies:
        assert_problem(await tenant.post("/availability", bad), 422)


async def test_room_link_changes_show_at_once(tenant: Tenant) -> None:
    await three_rooms(tenant)
    assert len((await tenant.post("/availability", {"building": "HQ"})).json()["rooms"]) == 2
    # Moved to another building, re-linked to another mailbox, unlinked, newly linked.
    await tenant.put_room("a1", "a1@contoso.example", building="Annex")
    await tenant.put_room("a2", "b1@contoso.example", floor="2")
    deleted = await tenant.client.delete(f"{tenant.base}/rooms/b1", headers=ADMIN)
    assert deleted.status_code == 204, deleted.text
    await tenant.put_room("c3", "c3@contoso.example")
    annex = (await tenant.post("/availability", {"building": "Annex", **DAY})).json()
    assert [r["room_id"] for r in annex["rooms"]] == ["a1"]
    hq = (await tenant.post("/availability", {"building": "HQ", **DAY})).json()
    assert [(r["room_id"], r["mailbox"], r["stale"]) for r in hq["rooms"]] == [
        ("a2", "b1@contoso.example", False),
        ("c3", "c3@contoso.example", True),
    ]
    assert hq["rooms"][0]["busy"] == []  # b1's calendar, not a2's old one
    assert_problem(await tenant.post("/availability", {"rooms": ["b1"]}), 404)


async def test_events_after_each_title_policy(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example", time_zone="America/New_York")
    await tenant.sync(
        "a1@contoso.example",
        [
            event("open", "14:00", "15:00", title="Quarterly review"),
            event(
                "secret", "16:00", "17:00", title="Layoffs", sensitivity=Sensitivity.CONFIDENTIAL
            ),
            event("gone", "18:00", "19:00", title="Cancelled one", cancelled=True),
            event(
                "day",
                "2026-11-23T00:00:00+00:00",
                "2026-11-24T00:00:00+00:00",
                all_day=True,
                title="Holiday",
                show_as=ShowAs.FREE,
            ),
            event("tomorrow", "2026-11-24T15:00:00+00:00", "2026-11-24T16:00:00+00:00"),
        ],
    )
    tenant.clock.set(dt.datetime(2026, 11, 23, 13, 0, tzinfo=dt.UTC))  # 08:00 in New York

    async def titles() -> dict[str, str | None]:
        response = await tenant.get("/rooms/a1/events")
        assert response.status_code == 200, response.text
        body = response.json()
        RoomEventsOut.model_validate(body)
        return {e["id"]: e["title"] for e in body["events"]}

    # Default window: the room's local day (New York, UTC-5): 05:00Z .. 05:00Z next day.
    assert await titles() == {
        "day": "Holiday",
        "open": "Quarterly review",
        "secret": "Private",
        "gone": "Cancelled one",
    }
    body = (await tenant.get("/rooms/a1/events")).json()
    assert body["window"] == {"start": "2026-11-23T05:00:00Z", "end": "2026-11-24T05:00:00Z"}
    day = next(e for e in body["events"] if e["id"] == "day")
    assert (day["start"], day["end"], day["start_date"], day["is_all_day"]) == (
        "2026-11-23T05:00:00Z",
        "2026-11-24T05:00:00Z",
        "2026-11-23",
        True,
    )

    for policy, expected in (
        ("hide", {"day": "Busy", "open": "Busy", "secret": "Busy", "gone": "Busy"}),
        (
            "show",
            {
                "day": "Holiday",
                "open": "Quarterly review",
                "secret": "Layoffs",
                "gone": "Cancelled one",
            },
        ),
    ):
        patched = await tenant.client.patch(
            f"{tenant.base}", json={"title_policy": policy}, headers=ADMIN
        )
        assert patched.status_code == 200, patched.text
        # Tenant settings are cached for at most the poll interval (one second).
        tenant.clock.advance(dt.timedelta(seconds=1))
        assert await titles() == expected

    window = await tenant.get(
        "/rooms/a1/events", start="2026-11-24T00:00:00Z", end="2026-11-25T00:00:00Z"
    )
    assert [e["id"] for e in window.json()["events"]] == ["day", "tomorrow"]
    assert_problem(await tenant.get("/rooms/zz/events"), 404)
    assert_problem(await tenant.get("/rooms/a1/events", start="9999-12-31T23:00:00Z"), 422)
    assert_problem(
        await tenant.get(
            "/rooms/a1/events", start="2026-11-24T00:00:00Z", end="2026-11-23T00:00:00Z"
        ),
        422,
    )


async def test_bulk_answers_follow_writes_and_the_clock(tenant: Tenant) -> None:
    await three_rooms(tenant)

    async def states() -> list[tuple[str, str, str | None]]:
        response = await tenant.post("/availability", {"building": "HQ", **DAY})
        assert response.status_code == 200, response.text
        return [(r["room_id"], r["status"], r["next_change_at"]) for r in response.json()["rooms"]]

    first = await states()
    assert first == [("a1", "busy", "2026-11-23T09:30:00Z"), ("a2", "free", "2026-11-23T12:00:00Z")]
    assert await states() == first
    await tenant.sync("a2@contoso.example", [event("m3", "09:00", "10:00")])
    assert await states() == [
        ("a1", "busy", "2026-11-23T09:30:00Z"),
        ("a2", "busy", "2026-11-23T10:00:00Z"),
    ]
    tenant.clock.set(at("09:30"))
    assert await states() == [("a1", "free", None), ("a2", "busy", "2026-11-23T10:00:00Z")]
    tenant.clock.set(at("10:00") + dt.timedelta(seconds=1))  # over the one-hour bound
    assert await states() == [("a1", "unknown", None), ("a2", "unknown", None)]
