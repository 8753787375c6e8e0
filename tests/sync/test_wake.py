"""How intake's commits wake the in-process worker: they may only ever bring its next look
earlier, never make it loop at once for work that is not due yet."""

from __future__ import annotations

import asyncio
import datetime as dt

from bookingcache.clock import FixedClock
from bookingcache.domain.notifications import InboxItem
from bookingcache.settings import SyncSettings
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.worker import SourceSet, Worker
from tests.support.tenants import TENANT, add_tenant

from .fakes import MemorySource


def _worker(store: SqlStore, queue: SqlJobQueue, clock: FixedClock, *, poll_ms: int) -> Worker:
    source = MemorySource(clock)
    return Worker(
        store=store,
        queue=queue,
        sources=SourceSet(connector=source, graph=source, push=PushSource()),
        settings=SyncSettings.model_validate({"poll_interval_ms": poll_ms}),
        clock=clock,
    )


async def test_told_while_awake_it_keeps_the_due_time_instead_of_looping(
    store: SqlStore, clock: FixedClock
) -> None:
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0.05)
    worker = _worker(store, queue, clock, poll_ms=60_000)
    now = clock.now()
    later, sooner = now + dt.timedelta(seconds=2), now + dt.timedelta(seconds=1)
    worker.wake(later)
    worker.wake(sooner)
    worker.wake(later)
    assert not worker._wake.is_set()  # no extra turn of the loop
    assert worker._told_due == sooner  # the next sleep ends then at the latest
    worker.wake()  # "look now" still means now
    assert worker._wake.is_set()


async def test_a_commit_cuts_a_long_sleep_short_to_the_new_jobs_due_time(
    store: SqlStore, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0.05)
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    # The worker would look again only after a minute by itself.
    worker = _worker(store, queue, clock, poll_ms=60_000)
    worker.start()
    try:
        async with asyncio.timeout(10):
            while worker._sleeps_until is None:  # asleep, for a minute
                await asyncio.sleep(0.005)
            await inbox.append([InboxItem(TENANT, room, change_type="updated")])
            clock.advance(dt.timedelta(milliseconds=50))  # the job falls due
            # Woken for the job's due time, long before the minute is over.
            while await queue.busy_calendars():
                await asyncio.sleep(0.005)
        assert worker.stats.refreshes == 1
        assert worker.stats.failures == 0
    finally:
        await worker.stop(grace_s=0.1)


async def test_a_claim_finds_when_the_worker_must_look_again(
    store: SqlStore, clock: FixedClock
) -> None:
    [room, other, third] = await add_tenant(store)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0.05, coalesce_window_s=0.3, lease_s=30)
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    began = clock.now()
    await inbox.append([InboxItem(TENANT, room, change_type="updated")])
    assert await queue.claim("w1", 10) == []
    # Nothing due yet: look again when the job falls due.
    assert queue.upcoming == began + dt.timedelta(milliseconds=50)
    clock.advance(dt.timedelta(milliseconds=40))
    await inbox.append([InboxItem(TENANT, other, change_type="updated")])
    clock.advance(dt.timedelta(milliseconds=10))
    # The first is due, but a notification for the second arrived 10 ms ago: the first is
    # claimed, the next look is when the second falls due.
    [first] = await queue.claim("w1", 10)
    assert first.mailbox == room
    assert queue.upcoming == began + dt.timedelta(milliseconds=90)
    clock.advance(dt.timedelta(milliseconds=45))
    await inbox.append([InboxItem(TENANT, other, change_type="updated")])
    clock.advance(dt.timedelta(milliseconds=5))
    # Due, but held back while its notifications keep coming: look again when it is released
    # (quiet for the gather delay), not at once.
    assert await queue.claim("w1", 10) == []
    assert queue.upcoming == clock.now() + dt.timedelta(milliseconds=45)
    assert queue.upcoming == queue.held_until
    await queue.enqueue({(TENANT, third): clock.now() + dt.timedelta(milliseconds=20)})
    assert await queue.claim("w1", 10) == []
    assert queue.upcoming == clock.now() + dt.timedelta(milliseconds=20)
    assert queue.depth == 2  # the held job and the sweep's
    assert await queue.complete(first)
