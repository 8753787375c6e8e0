"""Room links: put, get, list with filters, delete, all-or-nothing import, and the calendars
that linked mailboxes imply."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import Room, Tenant, TitlePolicy
from bookingcache.errors import InvalidInput, NotFound
from bookingcache.store.port import ChangedCalendar
from bookingcache.store.sql.store import SqlStore
from tests.support.tenants import ACME as TENANT

DAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
GEOMETRY = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [0, 0]]]}


async def test_put_creates_then_replaces(store: SqlStore, tenant: Tenant) -> None:
    room = Room(
        TENANT,
        "r9",
        "z@acme.test",
        "Zeppelin",
        building="Annex",
        floor="-1",
        geometry=GEOMETRY,
        time_zone="Asia/Tokyo",
    )
    stored, created = await store.put_room(room)
    assert created
    assert stored == room
    assert await store.get_room(TENANT, "r9") == room

    renamed = dataclasses.replace(room, name="Zeppelin II", geometry=None, time_zone=None)
    stored, created = await store.put_room(renamed)
    assert not created
    assert stored == renamed
    assert await store.get_room(TENANT, "r9") == renamed


async def test_capacity_round_trips_through_put_and_import(store: SqlStore, tenant: Tenant) -> None:
    room = Room(TENANT, "cap", "cap@acme.test", "Capacious", building="HQ", floor="2", capacity=12)
    assert await store.put_room(room) == (room, True)
    assert (await store.get_room(TENANT, "cap")).capacity == 12
    empty = Room(TENANT, "none", "none@acme.test", "Broom cupboard", capacity=0)
    assert await store.import_rooms(TENANT, [dataclasses.replace(room, capacity=None), empty]) == (
        1,
        1,
    )
    listed = {r.room_id: r.capacity for r in await store.list_rooms(TENANT)}
    assert listed["cap"] is None
    assert listed["none"] == 0
    assert listed["r1"] is None
    await store.put_room(dataclasses.replace(room, capacity=100_000))
    assert (await store.get_room(TENANT, "cap")).capacity == 100_000


async def test_list_filters_by_building_and_floor(store: SqlStore, tenant: Tenant) -> None:
    await store.put_room(Room(TENANT, "annex-1", "n@acme.test", "N", building="Annex", floor="1"))
    assert [r.room_id for r in await store.list_rooms(TENANT)] == ["annex-1", "r1", "r2", "r3"]
    assert [r.room_id for r in await store.list_rooms(TENANT, building="HQ")] == ["r1", "r2", "r3"]
    assert [r.room_id for r in await store.list_rooms(TENANT, building="HQ", floor="1")] == [
        "r1",
        "r3",
    ]
    assert [r.room_id for r in await store.list_rooms(TENANT, floor="1")] == [
        "annex-1",
        "r1",
        "r3",
    ]
    assert await store.list_rooms(TENANT, building="Nowhere") == []


async def test_unknown_tenant_or_room_is_not_found(store: SqlStore, tenant: Tenant) -> None:
    with pytest.raises(NotFound):
        await store.get_room(TENANT, "missing")
    with pytest.raises(NotFound):
        await store.get_room("nobody", "r1")
    with pytest.raises(NotFound):
        await store.list_rooms("nobody")
    with pytest.raises(NotFound):
        await store.delete_room(TENANT, "missing")
    with pytest.raises(NotFound):
        await store.put_room(Room("nobody", "r1", "a@x.test", "A"))
    with pytest.raises(NotFound):
        await store.import_rooms("nobody", [Room("nobody", "r1", "a@x.test", "A")])


async def test_linking_a_room_creates_its_calendar_in_the_right_zone(
    store: SqlStore, tenant: Tenant
) -> None:
    calendar = await store.get_calendar(TENANT, "a@acme.test")
    assert calendar.time_zone == "Europe/Berlin"  # the tenant's default
    assert calendar.last_success_at is None
    await store.put_room(Room(TENANT, "r1", "a@acme.test", "Room 1", time_zone="Asia/Tokyo"))
    assert (await store.get_calendar(TENANT, "a@acme.test")).time_zone == "Asia/Tokyo"
    await store.update_tenant(TENANT, {"default_time_zone": "Europe/Lisbon"})
    assert (await store.get_calendar(TENANT, "b@acme.test")).time_zone == "Europe/Lisbon"
    assert [c.mailbox for c in await store.list_calendars(TENANT)] == [
        "a@acme.test",
        "b@acme.test",
        "c@acme.test",
    ]
    assert len(await store.list_calendars()) == 3
    named = await store.list_calendars(
        TENANT, mailboxes=["c@acme.test", "zz@acme.test", "a@acme.test"]
    )
    assert [(c.mailbox, c.time_zone) for c in named] == [
        ("a@acme.test", "Asia/Tokyo"),
        ("c@acme.test", "Europe/Lisbon"),
    ]
    assert await store.list_calendars("nobody", mailboxes=["a@acme.test"]) == []


async def test_two_rooms_may_share_a_mailbox(store: SqlStore, tenant: Tenant) -> None:
    await store.put_room(Room(TENANT, "r1-annex", "a@acme.test", "Room 1 (annex entrance)"))
    await store.delete_room(TENANT, "r1")
    # The calendar stays while one room still links the mailbox.
    assert (await store.get_calendar(TENANT, "a@acme.test")).mailbox == "a@acme.test"
    await store.delete_room(TENANT, "r1-annex")
    with pytest.raises(NotFound):
        await store.get_calendar(TENANT, "a@acme.test")


async def test_relinking_drops_the_old_calendar_and_its_events(
    store: SqlStore, tenant: Tenant
) -> None:
    await store.replace_window(
        TENANT,
        "a@acme.test",
        window_start=DAY,
        window_end=DAY + dt.timedelta(days=1),
        events=[BasicEvent("e1", DAY + dt.timedelta(hours=9), DAY + dt.timedelta(hours=10))],
        synced_at=DAY,
    )
    seq = await store.last_change_seq()
    seen: list[ChangedCalendar] = []
    store.add_change_listener(seen.append)

    await store.put_room(Room(TENANT, "r1", "new-a@acme.test", "Room 1"))

    with pytest.raises(NotFound):
        await store.get_calendar(TENANT, "a@acme.test")
    assert (await store.get_calendar(TENANT, "new-a@acme.test")).last_success_at is None
    assert await store.events_in_window(
        TENANT, ["a@acme.test"], start=DAY, end=DAY + dt.timedelta(days=1)
    ) == {"a@acme.test": []}
    changes = await store.changes_since(seq)
    assert [(c.tenant_id, c.mailbox) for c in changes] == [(TENANT, "a@acme.test")]
    assert seen == [ChangedCalendar(c.tenant_id, c.mailbox) for c in changes]


async def test_import_counts_created_and_updated(store: SqlStore, tenant: Tenant) -> None:
    batch = [Room(TENANT, f"imp-{i}", f"imp{i}@acme.test", f"Imported {i}") for i in range(250)]
    batch.append(Room(TENANT, "r1", "a@acme.test", "Room 1 renamed", building="HQ", floor="1"))
    assert await store.import_rooms(TENANT, batch) == (250, 1)
    assert len(await store.list_rooms(TENANT)) == 253
    assert (await store.get_room(TENANT, "r1")).name == "Room 1 renamed"
    assert len(await store.list_calendars(TENANT)) == 253
    assert await store.import_rooms(TENANT, batch) == (0, 251)


@pytest.mark.parametrize(
    "bad",
    [
        Room(TENANT, "", "x@acme.test", "No id"),
        Room(TENANT, "x", "", "No mailbox"),
        Room(TENANT, "x", "x@acme.test", ""),
        Room(TENANT, "x" * 201, "x@acme.test", "Long id"),
        Room(TENANT, "x", "x@acme.test", "Bad zone", time_zone="Mars/Olympus"),
        Room(TENANT, "x", "x@acme.test", "Negative capacity", capacity=-1),
        Room(TENANT, "x", "x@acme.test", "Huge capacity", capacity=100_001),
        Room("other-tenant", "x", "x@acme.test", "Wrong tenant"),
        Room(TENANT, "imp-1", "dup@acme.test", "Duplicate id in the batch"),
    ],
)
async def test_import_is_all_or_nothing(store: SqlStore, tenant: Tenant, bad: Room) -> None:
    before = await store.list_rooms(TENANT)
    batch = [Room(TENANT, f"imp-{i}", f"imp{i}@acme.test", f"Imported {i}") for i in range(5)]
    batch.insert(3, bad)
    batch.append(Room(TENANT, "r1", "moved@acme.test", "Would move r1"))
    with pytest.raises(InvalidInput, match="room 4"):
        await store.import_rooms(TENANT, batch)
    assert await store.list_rooms(TENANT) == before
    assert len(await store.list_calendars(TENANT)) == 3


async def test_bad_single_room_is_refused(store: SqlStore, tenant: Tenant) -> None:
    with pytest.raises(InvalidInput):
        await store.put_room(Room(TENANT, "r1", "a@acme.test", "Room 1", time_zone="Nowhere/X"))
    assert (await store.get_room(TENANT, "r1")).time_zone is None


async def test_windows_zone_names_are_accepted(store: SqlStore, tenant: Tenant) -> None:
    room = Room(TENANT, "w", "w@acme.test", "Windows zone", time_zone="W. Europe Standard Time")
    await store.put_room(room)
    assert (await store.get_calendar(TENANT, "w@acme.test")).time_zone == room.time_zone


async def test_rooms_listeners_hear_every_committed_room_write(
    store: SqlStore, tenant: Tenant
) -> None:
    heard: list[str] = []
    store.add_rooms_listener(heard.append)
    await store.put_room(Room(TENANT, "r4", "d@acme.test", "Room 4"))
    await store.import_rooms(TENANT, [Room(TENANT, "r5", "e@acme.test", "Room 5")])
    await store.delete_room(TENANT, "r4")
    with pytest.raises(InvalidInput):
        await store.import_rooms(TENANT, [Room(TENANT, "", "f@acme.test", "No id")])
    with pytest.raises(NotFound):
        await store.delete_room(TENANT, "r4")
    assert heard == [TENANT, TENANT, TENANT]
    store.remove_rooms_listener(heard.append)
    await store.delete_tenant(TENANT)
    assert heard == [TENANT, TENANT, TENANT]


async def test_every_room_write_dates_the_tenants_layout(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    """``layout_changed_at``: the tenant's rooms or settings, whichever changed last."""
    created = await store.layout_changed_at(TENANT)
    assert created == clock.now()
    minute = dt.timedelta(minutes=1)

    clock.advance(minute)
    await store.put_room(Room(TENANT, "r4", "d@acme.test", "Room 4"))
    assert await store.layout_changed_at(TENANT) == clock.now()
    clock.advance(minute)
    await store.import_rooms(TENANT, [Room(TENANT, "r4", "d@acme.test", "Room four")])
    assert await store.layout_changed_at(TENANT) == clock.now()
    clock.advance(minute)
    await store.delete_room(TENANT, "r4")
    assert await store.layout_changed_at(TENANT) == clock.now()
    clock.advance(minute)
    await store.update_tenant(TENANT, {"title_policy": TitlePolicy.SHOW})
    assert await store.layout_changed_at(TENANT) == clock.now()

    # Reads and failed writes change nothing.
    changed = clock.now()
    clock.advance(minute)
    await store.list_rooms(TENANT)
    with pytest.raises(NotFound):
        await store.delete_room(TENANT, "r4")
    assert await store.layout_changed_at(TENANT) == changed
    with pytest.raises(NotFound):
        await store.layout_changed_at("nobody")
