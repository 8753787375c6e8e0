"""The replace-window contract: the diff, the bookkeeping, the feed, and the window read."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import pytest

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent, EventDiff, EventType, Sensitivity, ShowAs
from bookingcache.domain.tenancy import Room, Tenant
from bookingcache.errors import InvalidInput, InvalidWindow, NotFound
from bookingcache.store.sql.store import SqlStore
from tests.support.tenants import ACME as TENANT

A = "a@acme.test"
B = "b@acme.test"
DAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
WINDOW = (DAY, DAY + dt.timedelta(days=1))


def at(hours: float) -> dt.datetime:
    return DAY + dt.timedelta(hours=hours)


def ev(event_id: str, start_h: float, end_h: float, **fields: object) -> BasicEvent:
    return BasicEvent(id=event_id, start=at(start_h), end=at(end_h), **fields)  # type: ignore[arg-type]


async def replace(
    store: SqlStore,
    events: Sequence[BasicEvent],
    *,
    mailbox: str = A,
    window: tuple[dt.datetime, dt.datetime] = WINDOW,
    synced_at: dt.datetime = DAY,
) -> EventDiff:
    return await store.replace_window(
        TENANT,
        mailbox,
        window_start=window[0],
        window_end=window[1],
        events=events,
        synced_at=synced_at,
    )


async def cached(store: SqlStore, mailbox: str = A) -> list[BasicEvent]:
    """Everything cached for the mailbox from 3 January to 8 January."""
    found = await store.events_in_window(TENANT, [mailbox], start=at(-48), end=at(72))
    return found[mailbox]


async def test_first_replace_adds_everything(store: SqlStore, tenant: Tenant) -> None:
    events = [
        ev("e1", 9, 10, title="Standup"),
        ev(
            "e2",
            11,
            12.5,
            show_as=ShowAs.TENTATIVE,
            sensitivity=Sensitivity.PRIVATE,
            type=EventType.OCCURRENCE,
            series_master_id="m1",
        ),
        ev("e3", 13, 14, is_cancelled=True, show_as=ShowAs.FREE),
    ]
    diff = await replace(store, events)
    assert diff == EventDiff(added=tuple(events))
    assert await cached(store) == events


async def test_diff_names_added_changed_removed_and_leaves_unchanged_alone(
    store: SqlStore, tenant: Tenant
) -> None:
    await replace(store, [ev("keep", 8, 9), ev("move", 9, 10), ev("gone", 10, 11)])
    moved = ev("move", 15, 16)
    retitled = ev("keep2", 12, 13)
    diff = await replace(store, [ev("keep", 8, 9), moved, retitled])
    assert diff == EventDiff(added=(retitled,), changed=(moved,), removed=("gone",))
    assert await cached(store) == [ev("keep", 8, 9), retitled, moved]


@pytest.mark.parametrize(
    "change",
    [
        {"start": at(9.5)},
        {"end": at(10.5)},
        {"is_all_day": True},
        {"show_as": ShowAs.OOF},
        {"is_cancelled": True},
        {"title": "Renamed"},
        {"title": None},
        {"sensitivity": Sensitivity.CONFIDENTIAL},
        {"type": EventType.EXCEPTION},
        {"series_master_id": "master"},
    ],
)
async def test_every_basic_field_counts_as_a_change(
    store: SqlStore, tenant: Tenant, change: dict[str, object]
) -> None:
    original = ev("e1", 9, 10, title="Planning")
    await replace(store, [original])
    updated = dataclasses.replace(original, **change)  # type: ignore[arg-type]
    assert await replace(store, [updated]) == EventDiff(changed=(updated,))
    assert await cached(store) == [updated]


async def test_same_input_twice_is_an_empty_diff_and_no_feed_row(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    events = [ev("e1", 9, 10, title="A"), ev("e2", 0, 24, is_all_day=True, show_as=ShowAs.OOF)]
    await replace(store, events)
    seq = await store.last_change_seq()
    diff = await replace(store, list(reversed(events)), synced_at=at(1))
    assert diff.is_empty
    assert await store.last_change_seq() == seq
    # ... but the successful sync is still recorded.
    assert (await store.get_calendar(TENANT, A)).last_success_at == at(1)


async def test_events_outside_the_window_are_untouched(store: SqlStore, tenant: Tenant) -> None:
    yesterday = ev("yesterday", -15, -14)
    tomorrow = ev("tomorrow", 33, 34)
    await replace(store, [yesterday, tomorrow], window=(at(-48), at(72)))
    diff = await replace(store, [ev("today", 9, 10)])
    assert diff == EventDiff(added=(ev("today", 9, 10),))
    assert await cached(store) == [yesterday, ev("today", 9, 10), tomorrow]
    # An empty window replacement clears only the window.
    assert await replace(store, []) == EventDiff(removed=("today",))
    assert await cached(store) == [yesterday, tomorrow]


async def test_window_edges_are_half_open(store: SqlStore, tenant: Tenant) -> None:
    edge_events = [
        ev("ends-at-start", -1, 0),
        ev("starts-at-end", 24, 25),
        ev("straddles-start", -1, 1),
        ev("straddles-end", 23, 25),
        ev("point-at-start", 0, 0),
        ev("point-at-end", 24, 24),
    ]
    await replace(store, edge_events, window=(at(-48), at(72)))
    diff = await replace(store, [])
    assert sorted(diff.removed) == ["point-at-start", "straddles-end", "straddles-start"]
    assert sorted(e.id for e in await cached(store)) == [
        "ends-at-start",
        "point-at-end",
        "starts-at-end",
    ]


async def test_given_events_outside_the_window_are_ignored(store: SqlStore, tenant: Tenant) -> None:
    diff = await replace(store, [ev("inside", 9, 10), ev("outside", 30, 31)])
    assert diff == EventDiff(added=(ev("inside", 9, 10),))
    assert [e.id for e in await cached(store)] == ["inside"]


async def test_an_event_moved_into_the_window_is_a_change(store: SqlStore, tenant: Tenant) -> None:
    await replace(store, [ev("e1", 33, 34)], window=(at(24), at(48)))
    moved = ev("e1", 9, 10)
    assert await replace(store, [moved]) == EventDiff(changed=(moved,))
    assert await cached(store) == [moved]


async def test_calendars_are_independent(store: SqlStore, tenant: Tenant) -> None:
    await replace(store, [ev("e1", 9, 10)], mailbox=A)
    await replace(store, [ev("e1", 11, 12)], mailbox=B)
    assert await replace(store, [], mailbox=A) == EventDiff(removed=("e1",))
    assert await cached(store, B) == [ev("e1", 11, 12)]


async def test_all_day_events_round_trip(store: SqlStore, tenant: Tenant) -> None:
    holiday = BasicEvent(
        "holiday", DAY, DAY + dt.timedelta(days=2), is_all_day=True, show_as=ShowAs.OOF
    )
    await replace(store, [holiday], window=(DAY, DAY + dt.timedelta(days=3)))
    assert await cached(store) == [holiday]
    assert await replace(store, [holiday], window=(DAY, DAY + dt.timedelta(days=3))) == EventDiff()


async def test_all_day_events_are_read_where_the_room_zone_places_them(
    store: SqlStore, tenant: Tenant
) -> None:
    await store.put_room(Room(TENANT, "tokyo", "t@acme.test", "Tokyo", time_zone="Asia/Tokyo"))
    await store.put_room(Room(TENANT, "ny", "n@acme.test", "NY", time_zone="America/New_York"))
    # 5 January as a local date: Tokyo [4 Jan 15:00Z, 5 Jan 15:00Z), NY [5 Jan 05:00Z, 6 Jan 05:00Z)
    day_off = BasicEvent("off", DAY, DAY + dt.timedelta(days=1), is_all_day=True)
    for mailbox in ("t@acme.test", "n@acme.test"):
        await replace(store, [day_off], mailbox=mailbox, window=(at(-24), at(48)))

    late_evening_utc = (at(-10), at(-8))  # 4 Jan 14:00Z-16:00Z
    found = await store.events_in_window(
        TENANT, ["t@acme.test", "n@acme.test"], start=late_evening_utc[0], end=late_evening_utc[1]
    )
    assert found == {"t@acme.test": [day_off], "n@acme.test": []}

    early_next_day_utc = (at(26), at(28))  # 6 Jan 02:00Z-04:00Z
    found = await store.events_in_window(
        TENANT,
        ["t@acme.test", "n@acme.test"],
        start=early_next_day_utc[0],
        end=early_next_day_utc[1],
    )
    assert found == {"t@acme.test": [], "n@acme.test": [day_off]}


async def test_bookkeeping_of_success_and_failure(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    await store.record_sync_error(TENANT, A, error="HTTP 503 from Graph", at=at(1))
    await store.record_sync_error(TENANT, A, error="timed out", at=at(2))
    failing = await store.get_calendar(TENANT, A)
    assert failing.last_error == "timed out"
    assert failing.last_refresh_at == at(2)
    assert failing.last_success_at is None
    assert failing.extra["consecutive_failures"] == 2

    await replace(store, [ev("e1", 9, 10)], window=(at(0), at(24 * 14)), synced_at=at(3))
    healthy = await store.get_calendar(TENANT, A)
    assert healthy.last_error is None
    assert healthy.last_refresh_at == healthy.last_success_at == at(3)
    assert (healthy.window_start, healthy.window_end) == (at(0), at(24 * 14))
    assert healthy.extra["consecutive_failures"] == 0

    await store.set_delta_link(TENANT, A, "https://graph.test/delta?$deltatoken=abc")
    assert (await store.get_calendar(TENANT, A)).extra["delta_link"].endswith("abc")
    await store.set_delta_link(TENANT, A, None)
    assert (await store.get_calendar(TENANT, A)).extra["delta_link"] is None


async def test_unknown_calendar_or_tenant_is_not_found(store: SqlStore, tenant: Tenant) -> None:
    with pytest.raises(NotFound, match="mailbox"):
        await replace(store, [ev("e1", 9, 10)], mailbox="unlinked@acme.test")
    with pytest.raises(NotFound, match="tenant"):
        await store.replace_window(
            "nobody", A, window_start=WINDOW[0], window_end=WINDOW[1], events=[], synced_at=DAY
        )
    with pytest.raises(NotFound):
        await store.record_sync_error(TENANT, "unlinked@acme.test", error="x", at=DAY)
    with pytest.raises(NotFound):
        await store.get_calendar(TENANT, "unlinked@acme.test")
    assert await store.last_change_seq() == 0


async def test_bad_input_is_refused_and_changes_nothing(store: SqlStore, tenant: Tenant) -> None:
    await replace(store, [ev("e1", 9, 10)])
    seq = await store.last_change_seq()
    with pytest.raises(InvalidInput, match="twice"):
        await replace(store, [ev("dup", 9, 10), ev("dup", 11, 12)])
    with pytest.raises(InvalidInput):
        await replace(store, [ev("x" * 1025, 9, 10)])
    with pytest.raises(InvalidWindow):
        await replace(store, [], window=(at(24), at(0)))
    with pytest.raises(InvalidInput):
        await replace(store, [], window=(dt.datetime(2026, 1, 5), at(24)))  # naive
    with pytest.raises(InvalidInput):
        await store.events_in_window(TENANT, [A], start=dt.datetime(2026, 1, 5), end=at(24))
    assert await cached(store) == [ev("e1", 9, 10)]
    assert await store.last_change_seq() == seq


async def test_times_come_back_as_aware_utc(store: SqlStore, tenant: Tenant) -> None:
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    start = dt.datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=india)
    event = BasicEvent("e1", start, start + dt.timedelta(minutes=45))
    diff = await replace(store, [event], synced_at=dt.datetime(2026, 1, 5, 6, 0, tzinfo=india))
    assert diff.added == (event,)
    (stored,) = await cached(store)
    assert stored.start.utcoffset() == dt.timedelta(0)
    assert stored.start == dt.datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=dt.UTC)
    assert stored == event  # the same instants
    calendar = await store.get_calendar(TENANT, A)
    assert calendar.last_success_at == dt.datetime(2026, 1, 5, 0, 30, tzinfo=dt.UTC)
    assert calendar.last_success_at is not None
    assert calendar.last_success_at.utcoffset() == dt.timedelta(0)
    # The same instants written with another offset are no change.
    utc_copy = dataclasses.replace(
        event, start=event.start.astimezone(dt.UTC), end=event.end.astimezone(dt.UTC)
    )
    assert (await replace(store, [utc_copy])).is_empty


async def test_events_in_window_reads_many_mailboxes_ordered_by_start(
    store: SqlStore, tenant: Tenant
) -> None:
    await replace(store, [ev("late", 15, 16), ev("early", 8, 9), ev("mid", 11, 12)], mailbox=A)
    await replace(store, [ev("b1", 10, 11)], mailbox=B)
    found = await store.events_in_window(
        TENANT, [A, B, "c@acme.test", "unknown@acme.test"], start=at(8.5), end=at(15)
    )
    assert found == {
        A: [ev("early", 8, 9), ev("mid", 11, 12)],
        B: [ev("b1", 10, 11)],
        "c@acme.test": [],
        "unknown@acme.test": [],
    }
    assert await store.events_in_window("other", [A], start=at(0), end=at(24)) == {A: []}


async def test_events_in_window_handles_more_mailboxes_than_one_query_takes(
    store: SqlStore, tenant: Tenant
) -> None:
    rooms = [Room(TENANT, f"room-{i}", f"m{i}@acme.test", f"Room {i}") for i in range(1500)]
    await store.import_rooms(TENANT, rooms)
    for i in (0, 999, 1000, 1499):
        await replace(store, [ev(f"e{i}", 9, 10)], mailbox=f"m{i}@acme.test")
    found = await store.events_in_window(
        TENANT, [room.mailbox for room in rooms], start=at(0), end=at(24)
    )
    assert len(found) == 1500
    assert {m: [e.id for e in es] for m, es in found.items() if es} == {
        "m0@acme.test": ["e0"],
        "m999@acme.test": ["e999"],
        "m1000@acme.test": ["e1000"],
        "m1499@acme.test": ["e1499"],
    }
