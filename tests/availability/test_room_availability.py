"""``GET /v1/tenants/{t}/rooms/{room}/availability`` through the real app on every engine."""

from __future__ import annotations

import datetime as dt

import pytest

from bookingcache.api.availability import RoomAvailabilityOut
from bookingcache.domain.events import ShowAs
from tests.support.auth import ADMIN
from tests.support.availability import NOW, Tenant, at, event, z
from tests.support.problems import assert_problem

pytestmark = pytest.mark.pinned_dates


async def test_status_now_next_change_busy_and_free(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example", time_zone="Europe/Berlin")
    await tenant.sync(
        "a1@contoso.example",
        [
            event("m1", "08:30", "09:30"),
            event("m2", "09:30", "10:00", show_as=ShowAs.TENTATIVE),
            event("m3", "11:00", "11:10"),
            event("m4", "12:00", "13:00", cancelled=True),
            event("m5", "14:00", "15:00", show_as=ShowAs.FREE),
        ],
    )
    response = await tenant.get("/rooms/a1/availability")
    assert response.status_code == 200, response.text
    body = response.json()
    RoomAvailabilityOut.model_validate(body)
    assert body["status"] == "busy"
    assert body["next_change_at"] == "2026-11-23T09:30:00Z"
    assert body["next_status"] == "tentative"
    assert body["stale"] is False
    assert body["last_synced_at"] == z(NOW)
    # Default window: now to the end of the room's local day (midnight in Berlin = 23:00 UTC).
    assert body["window"] == {"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T23:00:00Z"}
    assert body["busy"] == [
        {"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T10:00:00Z"},
        {"start": "2026-11-23T11:00:00Z", "end": "2026-11-23T11:10:00Z"},
    ]
    # The 10:00-11:00 gap is 60 minutes, the cancelled and free events take nothing.
    assert body["free"] == [
        {"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T11:00:00Z"},
        {"start": "2026-11-23T11:10:00Z", "end": "2026-11-23T23:00:00Z"},
    ]
    assert body["segments"] == [
        {"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T09:30:00Z", "status": "busy"},
        {"start": "2026-11-23T09:30:00Z", "end": "2026-11-23T10:00:00Z", "status": "tentative"},
        {"start": "2026-11-23T11:00:00Z", "end": "2026-11-23T11:10:00Z", "status": "busy"},
    ]


async def test_min_free_minutes_drops_short_gaps(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync(
        "a1@contoso.example", [event("m1", "10:00", "10:50"), event("m2", "11:00", "12:00")]
    )
    response = await tenant.get(
        "/rooms/a1/availability",
        start="2026-11-23T09:00:00Z",
        end="2026-11-23T13:00:00Z",
        min_free_minutes=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["free"] == [
        {"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T10:00:00Z"},
        {"start": "2026-11-23T12:00:00Z", "end": "2026-11-23T13:00:00Z"},
    ]
    response = await tenant.get(
        "/rooms/a1/availability",
        start="2026-11-23T09:00:00Z",
        end="2026-11-23T13:00:00Z",
        min_free_minutes=10,
    )
    assert len(response.json()["free"]) == 3


async def test_answer_follows_the_clock_and_a_write_in_the_same_process(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "10:00")])
    window = {"start": "2026-11-23T08:00:00Z", "end": "2026-11-23T18:00:00Z"}
    first = (await tenant.get("/rooms/a1/availability", **window)).json()
    assert (first["status"], first["next_change_at"]) == ("busy", "2026-11-23T10:00:00Z")

    # The same request later: the status changed at 10:00, so the answer must not be reused.
    tenant.clock.set(at("10:00"))
    later = (await tenant.get("/rooms/a1/availability", **window)).json()
    assert (later["status"], later["next_change_at"]) == ("free", None)

    # A booking stored by a refresh in this process shows in the very next answer.
    await tenant.sync(
        "a1@contoso.example", [event("m1", "08:00", "10:00"), event("m2", "10:00", "11:00")]
    )
    booked = (await tenant.get("/rooms/a1/availability", **window)).json()
    assert (booked["status"], booked["next_change_at"]) == ("busy", "2026-11-23T11:00:00Z")
    assert booked["busy"] == [{"start": "2026-11-23T08:00:00Z", "end": "2026-11-23T11:00:00Z"}]


async def test_never_synced_and_stale_read_unknown(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    never = (await tenant.get("/rooms/a1/availability")).json()
    assert (never["status"], never["stale"], never["last_synced_at"]) == ("unknown", True, None)

    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "12:00")])
    fresh = (await tenant.get("/rooms/a1/availability")).json()
    assert (fresh["status"], fresh["stale"]) == ("busy", False)

    # One hour is the tenant's bound: a second more and the cached data is not trusted.
    tenant.clock.advance(dt.timedelta(hours=1, seconds=1))
    stale = (await tenant.get("/rooms/a1/availability")).json()
    assert (stale["status"], stale["stale"], stale["next_change_at"]) == ("unknown", True, None)
    assert stale["busy"] == [
        {"start": z(tenant.clock.now().replace(second=0)), "end": z(at("12:00"))}
    ]

    # A refresh that finds nothing new changes no event, yet proves the data fresh again: a
    # calendar that looks stale is re-checked in the store (at most once per poll interval).
    synced_at = tenant.clock.now()
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "12:00")])
    tenant.clock.advance(dt.timedelta(seconds=1))
    again = (await tenant.get("/rooms/a1/availability")).json()
    assert (again["status"], again["stale"]) == ("busy", False)
    assert again["last_synced_at"] == z(synced_at)


async def test_all_day_event_is_the_rooms_local_day(tenant: Tenant) -> None:
    # Tokyo is UTC+9: the all-day event of 24 November runs 23 Nov 15:00Z .. 24 Nov 15:00Z.
    await tenant.put_room("tokyo", "tokyo@contoso.example", time_zone="Tokyo Standard Time")
    await tenant.sync(
        "tokyo@contoso.example",
        [
            event(
                "holiday",
                "2026-11-24T00:00:00+00:00",
                "2026-11-25T00:00:00+00:00",
                all_day=True,
                show_as=ShowAs.OOF,
            )
        ],
    )
    body = (await tenant.get("/rooms/tokyo/availability")).json()
    assert body["time_zone"] == "Asia/Tokyo"  # the Windows name, canonicalised on PUT
    # Now is 18:00 in Tokyo: the local day ends at 15:00Z, exactly when the holiday starts.
    assert body["window"]["end"] == "2026-11-23T15:00:00Z"
    assert (body["status"], body["next_change_at"], body["next_status"]) == (
        "free",
        "2026-11-23T15:00:00Z",
        "oof",
    )
    assert body["busy"] == []
    tomorrow = (
        await tenant.get(
            "/rooms/tokyo/availability", start="2026-11-23T12:00:00Z", end="2026-11-25T00:00:00Z"
        )
    ).json()
    assert (tomorrow["next_change_at"], tomorrow["next_status"]) == ("2026-11-23T15:00:00Z", "oof")
    assert tomorrow["segments"] == [
        {"start": "2026-11-23T15:00:00Z", "end": "2026-11-24T15:00:00Z", "status": "oof"}
    ]


async def test_far_window_is_read_from_the_store(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    far = NOW + dt.timedelta(days=40)
    await tenant.store.replace_window(
        tenant.id,
        "a1@contoso.example",
        window_start=far - dt.timedelta(days=1),
        window_end=far + dt.timedelta(days=1),
        events=[event("later", z(far), z(far + dt.timedelta(hours=2)))],
        synced_at=NOW,
    )
    body = (
        await tenant.get(
            "/rooms/a1/availability",
            start=z(far - dt.timedelta(hours=1)),
            end=z(far + dt.timedelta(hours=3)),
        )
    ).json()
    assert body["busy"] == [{"start": z(far), "end": z(far + dt.timedelta(hours=2))}]
    assert body["status"] == "free"


async def test_bad_requests_are_problems(tenant: Tenant) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    path = "/rooms/a1/availability"
    reversed_window = await tenant.get(
        path, start="2026-11-23T12:00:00Z", end="2026-11-23T10:00:00Z"
    )
    assert "before" in assert_problem(reversed_window, 422)["detail"]
    too_long = await tenant.get(path, start="2026-11-01T00:00:00Z", end="2027-01-15T00:00:00Z")
    assert "62 days" in assert_problem(too_long, 422)["detail"]
    naive = await tenant.get(path, start="2026-11-23T10:00:00", end="2026-11-23T12:00:00Z")
    assert_problem(naive, 422)
    assert_problem(await tenant.get(path, min_free_minutes=0), 422)
    assert_problem(await tenant.get(path, start="yesterday"), 422)
    for start, end in (
        ("0001-01-01T00:00:00+14:00", "0001-01-02T00:00:00Z"),
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59-23:59"),
        ("1850-01-01T00:00:00Z", "1850-01-02T00:00:00Z"),
    ):
        assert_problem(await tenant.get(path, start=start, end=end), 422)
    assert_problem(await tenant.get(path, start="9999-12-31T23:00:00Z"), 422)
    unknown = await tenant.get("/rooms/nowhere/availability")
    assert "nowhere" in assert_problem(unknown, 404)["detail"]
    anonymous = await tenant.client.get(f"{tenant.base}{path}")
    assert_problem(anonymous, 401)
    forged = {"Authorization": f"Bearer {tenant.id}.not-the-token"}
    assert_problem(await tenant.client.get(f"{tenant.base}{path}", headers=forged), 401)
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert_problem(await tenant.client.get(f"{tenant.base}{path}", headers=basic), 401)
    admin = await tenant.client.get(f"{tenant.base}{path}", headers=ADMIN)
    assert admin.status_code == 200, admin.text
    assert_problem(await tenant.client.get(f"/v1/tenants/t-unknown{path}", headers=ADMIN), 404)
    other = await tenant.client.get(f"/v1/tenants/other-tenant{path}", headers=tenant.reader)
    assert_problem(other, 403)
