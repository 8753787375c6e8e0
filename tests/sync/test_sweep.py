"""The reconciliation sweep: who gets a refresh, and when."""

from __future__ import annotations

import datetime as dt
import itertools

import sqlalchemy as sa

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.notifications import InboxItem
from bookingcache.domain.tenancy import EventSource
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.schema import inbox_batches, jobs
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.sweep import Sweep
from tests.support.tenants import TENANT, add_tenant


async def _due_times(store: SqlStore) -> dict[str, dt.datetime]:
    async with store.read() as conn:
        rows = await conn.execute(sa.select(jobs.c.mailbox, jobs.c.due_at))
        return {row.mailbox: row.due_at for row in rows}


async def _synced(store: SqlStore, mailbox: str, at: dt.datetime) -> None:
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    await store.replace_window(
        TENANT,
        mailbox,
        window_start=start,
        window_end=start + dt.timedelta(days=14),
        events=[BasicEvent(id="e", start=start, end=start + dt.timedelta(hours=1))],
        synced_at=at,
    )


async def test_stale_calendars_are_spread_out_and_busy_or_fresh_ones_skipped(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    rooms = await add_tenant(store, rooms=6)
    await add_tenant(store, "pushy", rooms=2, source=EventSource.PUSH, connector_url=None)
    old = clock.now() - dt.timedelta(minutes=30)
    for mailbox in rooms[:3]:
        await _synced(store, mailbox, old)
    await _synced(store, rooms[3], clock.now() - dt.timedelta(minutes=5))  # fresh
    await inbox.append([InboxItem(TENANT, rooms[4])])  # already has a job
    sweep = Sweep(store=store, queue=queue, inbox=inbox, clock=clock, bound_s=900, rate_per_s=2)
    assert await sweep.run_once() == 4  # rooms 0-2 (stale) and 5 (never synced)
    due = await _due_times(store)
    assert set(due) == {rooms[0], rooms[1], rooms[2], rooms[4], rooms[5]}
    swept = sorted(due[mailbox] for mailbox in (rooms[0], rooms[1], rooms[2], rooms[5]))
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(swept)]
    assert gaps == [0.5, 0.5, 0.5]  # never a burst: at most rate_per_s
    assert swept[0] == clock.now()
    # The next pass finds them all pending and schedules nothing twice.
    assert await sweep.run_once() == 0


async def test_many_stale_calendars_still_fit_in_the_bound(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    await add_tenant(store, rooms=40)
    sweep = Sweep(store=store, queue=queue, inbox=inbox, clock=clock, bound_s=10, rate_per_s=1)
    assert await sweep.run_once() == 40
    due = sorted((await _due_times(store)).values())
    assert due[-1] - due[0] < dt.timedelta(seconds=10)
    assert due[1] - due[0] == dt.timedelta(seconds=0.25)


async def test_the_change_feed_keeps_its_rows_for_the_retention_only(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    seqs = []
    for hour in range(6):  # one changed window an hour
        start = clock.now()
        await store.replace_window(
            TENANT,
            room,
            window_start=start,
            window_end=start + dt.timedelta(days=1),
            events=[BasicEvent(id=f"e{hour}", start=start, end=start + dt.timedelta(hours=1))],
            synced_at=start,
        )
        seqs.append(await store.last_change_seq())
        clock.advance(dt.timedelta(hours=1))
    # Now is an hour after the last change: with 3 hours' retention the 3 oldest go.
    sweep = Sweep(
        store=store, queue=queue, inbox=inbox, clock=clock, change_feed_retention_s=3 * 3600
    )
    assert await sweep.prune_change_feed() == 3
    assert [change.seq for change in await store.changes_since(0)] == seqs[3:]
    assert await sweep.prune_change_feed() == 0
    # Far past the retention, the newest row stays (the feed's position is never lost).
    clock.advance(dt.timedelta(days=30))
    assert await sweep.prune_change_feed() == 2
    assert [change.seq for change in await store.changes_since(0)] == seqs[5:]


async def test_the_inbox_keeps_its_record_for_the_retention_only(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    arrivals = []
    for _ in range(7):  # one commit round a day
        arrivals.append(clock.now())
        await inbox.append([InboxItem(TENANT, room, change_type="updated")])
        clock.advance(dt.timedelta(days=1))
    # Now is a day after the last round: with 2 days' retention the 5 oldest go.
    sweep = Sweep(store=store, queue=queue, inbox=inbox, clock=clock, inbox_retention_s=2 * 86_400)
    assert await sweep.prune_inbox() == 5
    async with store.read() as conn:
        kept = (await conn.execute(sa.select(inbox_batches.c.received_at))).scalars().all()
    assert sorted(kept) == arrivals[5:]
    assert await sweep.prune_inbox() == 0
    # In chunks, oldest first, stopping at the first younger row.
    assert await inbox.prune(arrivals[6], chunk=1, max_chunks=5) == 1
    assert await inbox.prune(clock.now(), chunk=1, max_chunks=5) == 1
    # The work those notifications asked for is the calendar's job, which stays.
    assert await queue.busy_calendars() == {(TENANT, room)}
