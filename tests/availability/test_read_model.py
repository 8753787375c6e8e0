"""The read model across processes: a second ``ReadModel`` on its own store connection (as in
another service process: no in-process signals) follows the first one's writes through the
change feed, the room index re-read and the sync-state re-check."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bookingcache.clock import FixedClock
from bookingcache.errors import StoreUnavailable
from bookingcache.read.model import ReadModel
from bookingcache.store.sql import notices
from bookingcache.store.sql.store import SqlStore
from tests.support.availability import NOW, Tenant, event

pytestmark = pytest.mark.pinned_dates


async def test_another_process_follows_the_change_feed(
    tenant: Tenant, other_store: SqlStore
) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")])
    clock = FixedClock(NOW)
    model = ReadModel(other_store, clock, poll_interval=dt.timedelta(seconds=1))
    settings = await other_store.get_tenant(tenant.id)
    view = await model.view(settings)
    assert [e.id for e in view.calendar("a1@contoso.example").events] == ["m1"]

    await tenant.sync(
        "a1@contoso.example", [event("m1", "08:00", "09:30"), event("m2", "10:00", "11:00")]
    )
    # Polls are at most once per interval; the next one after it sees the new event.
    view = await model.view(settings)
    assert [e.id for e in view.calendar("a1@contoso.example").events] == ["m1"]
    clock.advance(dt.timedelta(seconds=1))
    view = await model.view(settings)
    assert [e.id for e in view.calendar("a1@contoso.example").events] == ["m1", "m2"]


async def test_another_process_sees_room_links(tenant: Tenant, other_store: SqlStore) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")])
    clock = FixedClock(NOW)
    model = ReadModel(
        other_store,
        clock,
        poll_interval=dt.timedelta(seconds=1),
        rooms_ttl=dt.timedelta(seconds=30),
    )
    settings = await other_store.get_tenant(tenant.id)
    view = await model.view(settings)

    # A room linked elsewhere is found as soon as a request names it.
    await tenant.put_room("a2", "a2@contoso.example", building="Annex")
    await tenant.sync("a2@contoso.example", [event("m9", "12:00", "13:00")])
    clock.advance(dt.timedelta(seconds=1))
    entry = await model.room(view, "a2")
    assert entry.room.building == "Annex"
    assert [e.id for e in view.calendar("a2@contoso.example").events] == ["m9"]

    # A change to a known room shows once the index is re-read (every rooms_ttl, in the
    # background, so no request waits for it).
    await tenant.put_room("a1", "a1@contoso.example", building="Annex", floor="7")
    clock.advance(dt.timedelta(seconds=10))
    view = await model.view(settings)
    assert view.room("a1").room.floor == "1"
    clock.advance(dt.timedelta(seconds=30))
    view = await model.view(settings)
    await model.settle()
    assert view.room("a1").room.floor == "7"
    assert [e.room_id for e in view.rooms_where(building="Annex", floor=None)] == ["a1", "a2"]


async def test_a_refresh_without_changes_still_counts_as_fresh(
    tenant: Tenant, other_store: SqlStore
) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")])
    clock = FixedClock(NOW + dt.timedelta(hours=2))
    model = ReadModel(other_store, clock)
    settings = await other_store.get_tenant(tenant.id)
    view = await model.view(settings)
    bound = dt.timedelta(hours=1)
    calendar = view.calendar("a1@contoso.example")
    await model.confirm_sync_state(view, ["a1@contoso.example"], now=clock.now(), bound=bound)
    assert calendar.last_success_at == NOW  # truly stale

    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")], synced_at=clock.now())
    # Checked less than a poll interval ago: not asked again yet.
    await model.confirm_sync_state(view, ["a1@contoso.example"], now=clock.now(), bound=bound)
    assert calendar.last_success_at == NOW
    clock.advance(dt.timedelta(seconds=1))
    await model.confirm_sync_state(view, ["a1@contoso.example"], now=clock.now(), bound=bound)
    assert calendar.last_success_at == NOW + dt.timedelta(hours=2)


async def test_the_horizon_moves_with_time(tenant: Tenant, other_store: SqlStore) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    clock = FixedClock(NOW)
    model = ReadModel(other_store, clock, horizon_future=dt.timedelta(days=2))
    settings = await other_store.get_tenant(tenant.id)
    far = NOW + dt.timedelta(days=5)
    await tenant.store.replace_window(
        tenant.id,
        "a1@contoso.example",
        window_start=far,
        window_end=far + dt.timedelta(days=1),
        events=[event("later", far.isoformat(), (far + dt.timedelta(hours=1)).isoformat())],
        synced_at=NOW,
    )
    view = await model.view(settings)
    assert view.calendar("a1@contoso.example").events == []
    # Outside the horizon the store answers.
    found = await model.events(
        view, "a1@contoso.example", start=far, end=far + dt.timedelta(hours=2)
    )
    assert [e.id for e in found] == ["later"]
    clock.advance(dt.timedelta(days=4))
    # The aged view keeps answering while a view around now is built beside it.
    assert await model.view(settings) is view
    await model.settle()
    view = await model.view(settings)
    assert view.horizon.start == clock.now() - dt.timedelta(days=1)
    assert [e.id for e in view.calendar("a1@contoso.example").events] == ["later"]


async def test_rereading_unchanged_rooms_keeps_what_was_computed(
    tenant: Tenant, other_store: SqlStore
) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")])
    clock = FixedClock(NOW)
    model = ReadModel(other_store, clock, rooms_ttl=dt.timedelta(seconds=30))
    settings = await other_store.get_tenant(tenant.id)
    view = await model.view(settings)
    generation, entry = view.generation, view.room("a1")
    clock.advance(dt.timedelta(seconds=31))
    await model.view(settings)
    await model.settle()
    assert view.generation == generation
    assert view.room("a1") is entry
    await tenant.put_room("a1", "a1@contoso.example", name="Renamed")
    clock.advance(dt.timedelta(seconds=31))
    await model.view(settings)
    await model.settle()
    assert view.generation > generation
    assert view.room("a1").room.name == "Renamed"


async def test_another_process_sees_a_zone_change_at_the_next_poll(
    tenant: Tenant, other_store: SqlStore
) -> None:
    await tenant.put_room("a1", "a1@contoso.example", time_zone="Europe/Berlin")
    clock = FixedClock(NOW)
    model = ReadModel(other_store, clock, rooms_ttl=dt.timedelta(hours=1))
    settings = await other_store.get_tenant(tenant.id)
    view = await model.view(settings)
    assert view.room("a1").time_zone == "Europe/Berlin"
    # The store signals a zone change through the change feed; no room re-read is due yet.
    await tenant.put_room("a1", "a1@contoso.example", time_zone="Asia/Tokyo")
    clock.advance(dt.timedelta(seconds=1))
    view = await model.view(settings)
    assert view.room("a1").time_zone == "Asia/Tokyo"


async def test_on_postgresql_another_process_refresh_shows_before_the_next_poll(
    tenant: Tenant, other_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if other_store.dialect != "postgresql":
        pytest.skip("notices are PostgreSQL's; SQLite waits for the poll")
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")])
    clock = FixedClock(NOW)
    # A poll interval the test never reaches: only the notice can make it read the feed.
    model = ReadModel(other_store, clock, poll_interval=dt.timedelta(hours=1))
    model.attach()
    try:
        assert other_store.notices is not None
        await asyncio.wait_for(other_store.notices.connected.wait(), 10)
        settings = await other_store.get_tenant(tenant.id)
        view = await model.view(settings)
        assert [e.id for e in view.calendar("a1@contoso.example").events] == ["m1"]

        # The refresh is written by another process (another origin on its notice).
        monkeypatch.setattr(notices._origin, "value", "another-process")
        await tenant.sync(
            "a1@contoso.example", [event("m1", "08:00", "09:30"), event("m2", "10:00", "11:00")]
        )
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            view = await model.view(settings)
            seen = [e.id for e in view.calendar("a1@contoso.example").events]
            if seen == ["m1", "m2"] or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        assert seen == ["m1", "m2"]
    finally:
        await model.detach()


async def test_a_change_whose_read_failed_is_read_by_the_next_request(
    tenant: Tenant, other_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database away just when a changed calendar is re-read: the request fails, and the
    calendar stays to be read, so the next request (or the stream's next pass) sees the change
    instead of the old events for good."""
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:00", "09:30")])
    clock = FixedClock(NOW)
    model = ReadModel(other_store, clock, poll_interval=dt.timedelta(seconds=1))
    settings = await other_store.get_tenant(tenant.id)
    await model.view(settings)
    await tenant.sync(
        "a1@contoso.example", [event("m1", "08:00", "09:30"), event("m2", "10:00", "11:00")]
    )
    clock.advance(dt.timedelta(seconds=1))
    read_events = other_store.events_in_window

    async def away(*args: object, **kwargs: object) -> object:
        raise StoreUnavailable("cannot connect to the database: connection refused")

    monkeypatch.setattr(other_store, "events_in_window", away)
    with pytest.raises(StoreUnavailable):
        await model.view(settings)
    monkeypatch.setattr(other_store, "events_in_window", read_events)
    view = await model.view(settings)
    assert [e.id for e in view.calendar("a1@contoso.example").events] == ["m1", "m2"]
