"""The change feed: one row per committed non-empty diff, in commit order, with in-process
listeners called after the commit (told the calendar, not the seq)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import pytest
from sqlalchemy import func, select

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import Room, Tenant
from bookingcache.errors import InvalidInput
from bookingcache.store.port import CalendarChange, ChangedCalendar
from bookingcache.store.sql import windows
from bookingcache.store.sql.schema import calendar_changes
from bookingcache.store.sql.store import SqlStore
from tests.support.tenants import ACME as TENANT

DAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
END = DAY + dt.timedelta(days=1)


def _calendars(changes: Sequence[CalendarChange]) -> list[ChangedCalendar]:
    return [ChangedCalendar(change.tenant_id, change.mailbox) for change in changes]


def ev(event_id: str, hour: int) -> BasicEvent:
    return BasicEvent(event_id, DAY + dt.timedelta(hours=hour), DAY + dt.timedelta(hours=hour + 1))


async def test_feed_is_ordered_and_pages(store: SqlStore, tenant: Tenant) -> None:
    assert await store.last_change_seq() == 0
    assert await store.changes_since(0) == []
    order = ["a@acme.test", "c@acme.test", "b@acme.test", "a@acme.test"]
    for n, mailbox in enumerate(order):
        await store.replace_window(
            TENANT,
            mailbox,
            window_start=DAY,
            window_end=END,
            events=[ev(f"e{n}", n)],
            synced_at=DAY + dt.timedelta(minutes=n),
        )
    changes = await store.changes_since(0)
    assert [c.mailbox for c in changes] == order
    assert [c.at for c in changes] == [DAY + dt.timedelta(minutes=n) for n in range(4)]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 4
    assert await store.last_change_seq() == seqs[-1]
    assert await store.changes_since(seqs[0], limit=2) == changes[1:3]
    assert await store.changes_since(seqs[-1]) == []


async def test_listeners_hear_committed_changes_only(store: SqlStore, tenant: Tenant) -> None:
    heard: list[ChangedCalendar] = []

    def broken(change: ChangedCalendar) -> None:
        raise RuntimeError("a listener bug")

    store.add_change_listener(broken)
    store.add_change_listener(heard.append)
    await store.replace_window(
        TENANT, "a@acme.test", window_start=DAY, window_end=END, events=[ev("e1", 9)], synced_at=DAY
    )
    assert heard == _calendars(await store.changes_since(0))
    # No change, no call; a refused write, no call.
    await store.replace_window(
        TENANT, "a@acme.test", window_start=DAY, window_end=END, events=[ev("e1", 9)], synced_at=DAY
    )
    with pytest.raises(InvalidInput):
        await store.replace_window(
            TENANT,
            "a@acme.test",
            window_start=DAY,
            window_end=END,
            events=[ev("x", 1), ev("x", 2)],
            synced_at=DAY,
        )
    assert len(heard) == 1
    store.remove_change_listener(heard.append)
    await store.replace_window(
        TENANT, "a@acme.test", window_start=DAY, window_end=END, events=[], synced_at=DAY
    )
    assert len(heard) == 1
    assert len(await store.changes_since(0)) == 2


async def _changed_hourly(store: SqlStore, count: int) -> None:
    """``count`` changes of one calendar, an hour apart from ``DAY`` on: one feed row each."""
    for n in range(count):
        await store.replace_window(
            TENANT,
            "a@acme.test",
            window_start=DAY,
            window_end=END,
            events=[ev(f"e{n}", n)],
            synced_at=DAY + dt.timedelta(hours=n),
        )


async def test_pruning_goes_in_chunks_oldest_first_and_stops_at_a_younger_row(
    store: SqlStore, tenant: Tenant
) -> None:
    await _changed_hourly(store, 5)
    seqs = [change.seq for change in await store.changes_since(0)]
    # Four rows are older than the cut, in chunks of 1: at most 3 chunks go in one call.
    cut = DAY + dt.timedelta(hours=3, minutes=30)
    assert await store.prune_changes(before=cut, chunk=1, max_chunks=3) == 3
    assert [change.seq for change in await store.changes_since(0)] == seqs[3:]
    assert await store.prune_changes(before=cut, chunk=2, max_chunks=3) == 1
    assert [change.seq for change in await store.changes_since(0)] == seqs[4:]


async def test_pruning_keeps_recent_rows_and_the_newest(store: SqlStore, tenant: Tenant) -> None:
    await _changed_hourly(store, 3)
    newest = await store.last_change_seq()
    assert await store.prune_changes(before=DAY + dt.timedelta(hours=1, minutes=30)) == 2
    assert [c.seq for c in await store.changes_since(0)] == [newest]
    assert await store.prune_changes(before=DAY + dt.timedelta(days=9)) == 0
    assert await store.last_change_seq() == newest
    # Sequence numbers are never reused after pruning.
    await store.replace_window(
        TENANT, "a@acme.test", window_start=DAY, window_end=END, events=[], synced_at=DAY
    )
    assert await store.last_change_seq() > newest


async def test_a_zone_change_tells_read_models_to_reload(store: SqlStore, tenant: Tenant) -> None:
    heard: list[ChangedCalendar] = []
    store.add_change_listener(heard.append)
    seq = await store.last_change_seq()
    # Same link again: nothing to reload.
    await store.put_room(Room(TENANT, "r1", "a@acme.test", "Room 1", building="HQ", floor="1"))
    assert await store.changes_since(seq) == []
    # The room gets its own zone: its all-day events fall elsewhere now.
    await store.put_room(Room(TENANT, "r1", "a@acme.test", "Room 1", time_zone="Asia/Tokyo"))
    changes = await store.changes_since(seq)
    assert [c.mailbox for c in changes] == ["a@acme.test"]
    # The tenant's default moves every calendar without a zone of its own.
    await store.update_tenant(TENANT, {"default_time_zone": "America/Chicago"})
    changes = await store.changes_since(changes[-1].seq)
    assert sorted(c.mailbox for c in changes) == ["b@acme.test", "c@acme.test"]
    await store.update_tenant(TENANT, {"default_time_zone": "America/Chicago", "name": "Acme"})
    assert await store.changes_since(changes[-1].seq) == []
    assert heard == _calendars(await store.changes_since(seq))


async def test_an_open_append_holds_no_one_up_and_commits_after_what_was_read(
    store: SqlStore, tenant: Tenant
) -> None:
    """On PostgreSQL a seq is settled inside COMMIT (migration 0012): a transaction that appended
    and is still open does not hold up another's append, and when it commits its row comes after
    every row a reader has already seen, whatever number its INSERT drew first."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has one writer: appends are in commit order by nature")
    a, b = "a@acme.test", "b@acme.test"
    async with store.engine.connect() as connection:
        transaction = await connection.begin()
        await connection.run_sync(lambda sync: windows.append_changes(sync, [(TENANT, a)], at=DAY))
        provisional = await connection.scalar(select(func.max(calendar_changes.c.seq)))
        assert provisional is not None
        # Another append commits while the first is open, within a short bound.
        other = asyncio.create_task(
            store.replace_window(
                TENANT, b, window_start=DAY, window_end=END, events=[ev("e1", 9)], synced_at=DAY
            )
        )
        done, _ = await asyncio.wait({other}, timeout=5)
        if not done:
            await transaction.rollback()
            await other
        assert done, "an append waited for another transaction that had appended and was open"
        read = await store.changes_since(0)
        assert [(c.mailbox, c.seq) for c in read] == [(b, await store.last_change_seq())]
        cursor = read[-1].seq
        assert provisional < cursor  # the open row drew its first number before the other
        await transaction.commit()
    later = await store.changes_since(cursor)
    assert [c.mailbox for c in later] == [a]
    assert later[0].seq > cursor
    # The whole feed in commit order.
    assert [c.mailbox for c in await store.changes_since(0)] == [b, a]


async def test_a_transaction_s_rows_keep_their_order(store: SqlStore, tenant: Tenant) -> None:
    mailboxes = ["c@acme.test", "a@acme.test", "b@acme.test"]
    async with store.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: windows.append_changes(sync, [(TENANT, m) for m in mailboxes], at=DAY)
        )
    changes = await store.changes_since(0)
    assert [c.mailbox for c in changes] == mailboxes
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})


async def test_a_calendar_back_from_stale_is_in_the_feed_with_its_events_unchanged(
    store: SqlStore, tenant: Tenant
) -> None:
    """What its rooms show changes (unknown to known) though its events do not: a stream client
    that comes back learns it from the feed. Its tenant's staleness bound is an hour."""

    async def sync(at: dt.datetime, mailbox: str = "a@acme.test") -> None:
        await store.replace_window(
            TENANT, mailbox, window_start=DAY, window_end=END, events=[], synced_at=at
        )

    async def rows() -> list[tuple[str, dt.datetime]]:
        return [(change.mailbox, change.at) for change in await store.changes_since(0)]

    await sync(DAY)  # the first sync, with no events: known from now on
    assert await rows() == [("a@acme.test", DAY)]
    await sync(DAY + dt.timedelta(minutes=50))
    await sync(DAY + dt.timedelta(minutes=110))  # exactly the bound after the last: not stale
    assert len(await rows()) == 1
    back = DAY + dt.timedelta(minutes=170, seconds=1)  # an hour and a second after
    await sync(back)
    assert await rows() == [("a@acme.test", DAY), ("a@acme.test", back)]
    await sync(back + dt.timedelta(minutes=1))
    assert len(await rows()) == 2
    # Another calendar's first sync is its own.
    await sync(back, mailbox="b@acme.test")
    assert (await rows())[-1] == ("b@acme.test", back)
