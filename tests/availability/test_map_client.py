"""What a map client reads with the read token: ``GET .../buildings``, ``GET .../map/rooms`` and
``GET .../rooms:free``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from bookingcache.api.map_client import BuildingsOut, FreeRoomsOut, MapRoomsOut, natural_key
from bookingcache.domain.events import ShowAs
from tests.support.auth import ADMIN
from tests.support.availability import NOW, Tenant, at, event, z
from tests.support.problems import assert_problem

pytestmark = pytest.mark.pinned_dates

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 3], [0, 3], [0, 0]]]}


async def link(tenant: Tenant, room_id: str, **fields: Any) -> None:
    """Link ``room_id`` to its own mailbox with ``fields`` (building, floor, capacity, ...)."""
    body = {"mailbox": f"{room_id}@contoso.example", "name": room_id.upper(), **fields}
    response = await tenant.client.put(f"{tenant.base}/rooms/{room_id}", json=body, headers=ADMIN)
    assert response.status_code in (200, 201), response.text


# --- buildings and map rooms -----------------------------------------------------------------


def test_floors_sort_as_people_count_them() -> None:
    floors = ["10", "EG", "2", None, "B10", "-1", "B2", "0", "b3", "Mezzanine"]
    assert sorted(floors, key=natural_key) == [
        "-1",
        "0",
        "2",
        "10",
        "B2",
        "b3",
        "B10",
        "EG",
        "Mezzanine",
        None,
    ]


async def test_buildings_with_floors_in_natural_order(tenant: Tenant) -> None:
    for room_id, building, floor in [
        ("hq-10a", "HQ", "10"),
        ("hq-10b", "HQ", "10"),
        ("hq-2", "HQ", "2"),
        ("hq-b1", "HQ", "-1"),
        ("hq-eg", "HQ", "EG"),
        ("hq-none", "HQ", None),
        ("annex-1", "Annex", "1"),
        ("loose", None, None),
        ("loose-3", None, "3"),
    ]:
        await link(tenant, room_id, building=building, floor=floor)
    response = await tenant.get("/buildings")
    assert response.status_code == 200, response.text
    body = response.json()
    BuildingsOut.model_validate(body)
    assert body == {
        "buildings": [
            {"id": "Annex", "rooms": 1, "floors": [{"id": "1", "rooms": 1}]},
            {
                "id": "HQ",
                "rooms": 6,
                "floors": [
                    {"id": "-1", "rooms": 1},
                    {"id": "2", "rooms": 1},
                    {"id": "10", "rooms": 2},
                    {"id": "EG", "rooms": 1},
                    {"id": None, "rooms": 1},
                ],
            },
            {"id": None, "rooms": 2, "floors": [{"id": "3", "rooms": 1}, {"id": None, "rooms": 1}]},
        ]
    }
    # A room linked afterwards is counted at once (the listing kept is dropped with the index).
    await link(tenant, "annex-1b", building="Annex", floor="1")
    again = (await tenant.get("/buildings")).json()
    assert again["buildings"][0] == {"id": "Annex", "rooms": 2, "floors": [{"id": "1", "rooms": 2}]}


async def test_map_rooms_carry_capacity_and_geometry_but_no_mailbox(tenant: Tenant) -> None:
    await link(tenant, "r-10", building="HQ", floor="10", capacity=12, geometry=SQUARE)
    await link(tenant, "r-2", building="HQ", floor="2")
    await link(tenant, "r-2b", building="HQ", floor="2", capacity=0)
    await link(tenant, "annex", building="Annex", floor="2", capacity=4)
    await link(tenant, "nowhere")
    response = await tenant.get("/map/rooms")
    assert response.status_code == 200, response.text
    body = response.json()
    MapRoomsOut.model_validate(body)
    assert [room["id"] for room in body["rooms"]] == ["annex", "r-2", "r-2b", "r-10", "nowhere"]
    assert body["rooms"][3] == {
        "id": "r-10",
        "name": "R-10",
        "building": "HQ",
        "floor": "10",
        "capacity": 12,
        "geometry": SQUARE,
    }
    assert body["rooms"][4] == {
        "id": "nowhere",
        "name": "NOWHERE",
        "building": None,
        "floor": None,
        "capacity": None,
        "geometry": None,
    }
    assert "contoso.example" not in response.text

    async def ids(**params: str) -> list[str]:
        found = await tenant.get("/map/rooms", **params)
        assert found.status_code == 200, found.text
        return [room["id"] for room in found.json()["rooms"]]

    assert await ids(building="HQ") == ["r-2", "r-2b", "r-10"]
    assert await ids(building="HQ", floor="2") == ["r-2", "r-2b"]
    assert await ids(floor="2") == ["annex", "r-2", "r-2b"]
    assert await ids(building="Nowhere") == []
    # A re-linked room is shown as it is now.
    await link(tenant, "r-2", building="HQ", floor="2", capacity=6, geometry=SQUARE)
    [relinked] = [r for r in (await tenant.get("/map/rooms")).json()["rooms"] if r["id"] == "r-2"]
    assert (relinked["capacity"], relinked["geometry"]) == (6, SQUARE)


async def test_map_reads_need_the_tenants_own_token(
    tenant: Tenant, client: httpx.AsyncClient
) -> None:
    await link(tenant, "r1", building="HQ", floor="1")
    other = await client.post(
        "/v1/tenants",
        json={"id": f"{tenant.id}-x", "name": "Other", "event_source": "push"},
        headers=ADMIN,
    )
    assert other.status_code == 201, other.text
    foreign = {"Authorization": f"Bearer {other.json()['secrets']['read_token']}"}
    for path in ("/buildings", "/map/rooms", "/rooms:free"):
        url = f"{tenant.base}{path}"
        assert_problem(await client.get(url, headers=foreign), 403)
        assert_problem(await client.get(url), 401)
        assert_problem(await client.get(url, headers={"Authorization": "Bearer nope.x"}), 401)
        assert (await client.get(url, headers=ADMIN)).status_code == 200
        assert (await client.get(url, headers=tenant.reader)).status_code == 200
        assert_problem(await client.get(f"/v1/tenants/no-such{path}", headers=ADMIN), 404)


# --- rooms:free --------------------------------------------------------------------------------


async def free_floor(tenant: Tenant) -> None:
    """Rooms around 09:00-09:30 on the test day (now is 09:00Z), one case each."""
    capacities = {
        "small": 4,
        "edge": 6,
        "cancelled": 6,
        "elsewhere": 6,
        "busy": 6,
        "partial": 6,
        "tentative": 6,
        "medium": 8,
        "large": 12,
        "nocap": None,
        "stale": 2,
        "never": 2,
    }
    for room_id, capacity in capacities.items():
        await link(tenant, room_id, building="HQ", floor="1", capacity=capacity)
    await link(tenant, "annex", building="Annex", floor="1", capacity=1)
    busy, tentative, elsewhere = ShowAs.BUSY, ShowAs.TENTATIVE, ShowAs.WORKING_ELSEWHERE
    calendars = {
        "small": [event("s", "13:00", "14:00")],
        "edge": [event("before", "08:00", "09:00"), event("after", "09:30", "10:00")],
        "cancelled": [event("c", "09:00", "10:00", cancelled=True)],
        "elsewhere": [event("w", "09:00", "10:00", show_as=elsewhere)],
        "busy": [event("b", "08:30", "10:00", show_as=busy)],
        "partial": [event("p", "09:20", "09:40")],
        "tentative": [event("t", "09:10", "09:20", show_as=tentative)],
        "medium": [event("m", "11:00", "12:00")],
        "large": [],
        "nocap": [],
        "annex": [event("a", "16:00", "17:00")],
    }
    for room_id, events in calendars.items():
        await tenant.sync(f"{room_id}@contoso.example", events)
    await tenant.sync("stale@contoso.example", [], synced_at=NOW - dt.timedelta(hours=2))


async def free(tenant: Tenant, **params: Any) -> dict[str, Any]:
    response = await tenant.get("/rooms:free", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    FreeRoomsOut.model_validate(body)
    return body


def offered(body: dict[str, Any]) -> list[tuple[str, int | None, str | None]]:
    return [(room["id"], room["capacity"], room["free_until"]) for room in body["rooms"]]


async def test_free_rooms_are_free_for_the_whole_span_ranked_by_fit(tenant: Tenant) -> None:
    await free_floor(tenant)
    body = await free(tenant, building="HQ")
    assert (body["start"], body["end"]) == ("2026-11-23T09:00:00Z", "2026-11-23T09:30:00Z")
    # Berlin's day ends at 23:00Z: a room free until then has no free_until.
    assert offered(body) == [
        ("small", 4, "2026-11-23T13:00:00Z"),
        ("edge", 6, "2026-11-23T09:30:00Z"),
        ("cancelled", 6, None),
        ("elsewhere", 6, None),
        ("medium", 8, "2026-11-23T11:00:00Z"),
        ("large", 12, None),
        ("nocap", None, None),
    ]
    assert body["rooms"][0] == {
        "id": "small",
        "name": "SMALL",
        "building": "HQ",
        "floor": "1",
        "capacity": 4,
        "free_until": "2026-11-23T13:00:00Z",
    }
    # Without a building: the annex's room too, the smallest, first.
    assert [room["id"] for room in (await free(tenant))["rooms"]][:2] == ["annex", "small"]


async def test_capacity_floor_and_limit_narrow_the_offer(tenant: Tenant) -> None:
    await free_floor(tenant)
    # Rooms of unknown capacity are not offered when a capacity is asked for.
    assert offered(await free(tenant, capacity=7)) == [
        ("medium", 8, "2026-11-23T11:00:00Z"),
        ("large", 12, None),
    ]
    assert [r["id"] for r in (await free(tenant, capacity=6, limit=2))["rooms"]] == [
        "edge",
        "cancelled",
    ]
    assert (await free(tenant, capacity=13))["rooms"] == []
    assert [r["id"] for r in (await free(tenant, floor="1", building="Annex"))["rooms"]] == [
        "annex"
    ]
    assert (await free(tenant, building="HQ", floor="2"))["rooms"] == []


async def test_a_longer_or_later_span_changes_the_offer(tenant: Tenant) -> None:
    await free_floor(tenant)
    # 09:00-11:00: edge is taken at 09:30, the working-elsewhere event leaves its room usable.
    two_hours = await free(tenant, building="HQ", minutes=120)
    assert [room["id"] for room in two_hours["rooms"]] == [
        "small",
        "cancelled",
        "elsewhere",
        "medium",
        "large",
        "nocap",
    ]
    # Starting with an offset: 14:30+01:00 is 13:30Z, when small is taken.
    later = await free(tenant, building="HQ", start="2026-11-23T14:30:00+01:00", minutes=15)
    assert (later["start"], later["end"]) == ("2026-11-23T13:30:00Z", "2026-11-23T13:45:00Z")
    ids = [room["id"] for room in later["rooms"]]
    assert "small" not in ids
    assert {"edge", "busy", "partial", "tentative"} <= set(ids)
    # A span that began a little before now but is not over is judged whole: busy from 08:30.
    begun = await free(tenant, building="HQ", start=z(at("08:45")), minutes=30)
    assert "busy" not in [room["id"] for room in begun["rooms"]]
    assert "edge" not in [room["id"] for room in begun["rooms"]]


async def test_stale_and_never_synced_rooms_are_never_offered(tenant: Tenant) -> None:
    await free_floor(tenant)
    ids = [room["id"] for room in (await free(tenant, limit=1000))["rooms"]]
    assert "stale" not in ids
    assert "never" not in ids
    assert len(ids) == 8
    # An hour and a second later every calendar is stale: nothing is offered.
    tenant.clock.advance(dt.timedelta(hours=1, seconds=1))
    assert (await free(tenant))["rooms"] == []
    # A refresh that changed nothing makes one fresh again.
    await tenant.sync("large@contoso.example", [], synced_at=tenant.clock.now())
    tenant.clock.advance(dt.timedelta(seconds=1))
    assert [room["id"] for room in (await free(tenant))["rooms"]] == ["large"]


async def test_a_span_beyond_the_cached_horizon_is_read_from_the_store(tenant: Tenant) -> None:
    await link(tenant, "a1", capacity=4)
    await link(tenant, "a2", capacity=4)
    far = NOW + dt.timedelta(days=40)
    for room_id, events in [
        ("a1", [event("later", z(far), z(far + dt.timedelta(hours=2)))]),
        ("a2", [event("after", z(far + dt.timedelta(hours=3)), z(far + dt.timedelta(hours=4)))]),
    ]:
        await tenant.store.replace_window(
            tenant.id,
            f"{room_id}@contoso.example",
            window_start=far - dt.timedelta(days=1),
            window_end=far + dt.timedelta(days=1),
            events=events,
            synced_at=NOW,
        )
    body = await free(tenant, start=z(far + dt.timedelta(minutes=30)), minutes=60)
    assert offered(body) == [("a2", 4, z(far + dt.timedelta(hours=3)))]


async def test_free_room_span_across_the_end_of_summer_time(tenant: Tenant) -> None:
    """Berlin's Sunday 25 October 2026 lasts 25 hours (02:00-03:00 CEST happens twice), from
    24 Oct 22:00Z to 25 Oct 23:00Z; all-day events and the end of the day follow the room's
    zone, not UTC."""
    tenant.clock.set(dt.datetime(2026, 10, 25, 6, 0, tzinfo=dt.UTC))
    for room_id in ("holiday", "late", "midnight", "tokyo"):
        zone = "Asia/Tokyo" if room_id == "tokyo" else None
        await link(tenant, room_id, capacity=4, time_zone=zone)
    monday = dt.datetime(2026, 10, 26, tzinfo=dt.UTC)
    calendars = {
        # All day on Monday 26 October, local: from 25 Oct 23:00Z.
        "holiday": [
            event(
                "h", z(monday), z(monday + dt.timedelta(days=1)), all_day=True, show_as=ShowAs.OOF
            )
        ],
        # 23:30 local, still Sunday.
        "late": [event("l", "2026-10-25T22:30:00Z", "2026-10-25T23:00:00Z")],
        # 00:30 local on Monday: after the end of the room's day.
        "midnight": [event("m", "2026-10-25T23:30:00Z", "2026-10-26T00:30:00Z")],
        "tokyo": [],
    }
    for room_id, events in calendars.items():
        await tenant.store.replace_window(
            tenant.id,
            f"{room_id}@contoso.example",
            window_start=dt.datetime(2026, 10, 20, tzinfo=dt.UTC),
            window_end=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
            events=events,
            synced_at=tenant.clock.now(),
        )
    # 21:00-21:30 local (CET, UTC+1). The room's day ends at 23:00Z: late is taken before
    # then; midnight's meeting (23:30Z) and the holiday (from 23:00Z) come after it.
    evening = await free(tenant, start="2026-10-25T21:00:00+01:00", minutes=30)
    assert offered(evening) == [
        ("late", 4, "2026-10-25T22:30:00Z"),
        ("holiday", 4, None),
        ("midnight", 4, None),
        ("tokyo", 4, None),
    ]
    # 23:30 local Sunday to 00:30 Monday: the holiday has begun (a UTC day would start at 01:00
    # local); midnight is free until exactly the span's end, and its day is now Monday.
    night = await free(tenant, start="2026-10-25T22:30:00Z", minutes=60)
    assert offered(night) == [("midnight", 4, "2026-10-25T23:30:00Z"), ("tokyo", 4, None)]
