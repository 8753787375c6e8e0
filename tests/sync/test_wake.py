"""How intake's commits wake the in-process worker: they may only ever bring its next look
earlier, never make it loop at once for work that is not due yet."""

from __future__ import annotations

import asyncio
import datetime as dt

from bookingcache.clock import SystemClock
from bookingcache.store.sql import SqlStore
from bookingcache.sync.model import InboxItem
from bookingcache.sync.queue import JobQueue
from bookingcache.sync.settings import SyncSettings
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.worker import SourceSet, Worker

from .conftest import TENANT, add_tenant
from .fakes import MemorySource


def _worker(store: SqlStore, queue: JobQueue, *, poll_ms: int) -> Worker:
    source = MemorySource()
    return Worker(
        store=store,
        queue=queue,
        sources=SourceSet(connector=source, graph=source, push=PushSource()),
        settings=SyncSettings.model_validate({"poll_interval_ms": poll_ms}),
        clock=SystemClock(),
    )


async def test_told_while_awake_it_keeps_the_due_time_instead_of_looping(store: SqlStore) -> None:
    queue = JobQueue(store, clock=SystemClock(), coalesce_s=0.05)
    worker = _worker(store, queue, poll_ms=60_000)
    now = dt.datetime.now(dt.UTC)
    later, sooner = now + dt.timedelta(seconds=2), now + dt.timedelta(seconds=1)
    worker.wake(later)
    worker.wake(sooner)
    worker.wake(later)
    assert not worker._wake.is_set()  # no extra turn of the loop
    assert worker._told_due == sooner  # the next sleep ends then at the latest
    worker.wake()  # "look now" still means now
    assert worker._wake.is_set()


async def test_a_commit_cuts_a_long_sleep_short_to_the_new_jobs_due_time(store: SqlStore) -> None:
    [room, *_] = await add_tenant(store)
    queue = JobQueue(store, clock=SystemClock(), coalesce_s=0.05)
    # The worker would look again only after a minute by itself.
    worker = _worker(store, queue, poll_ms=60_000)
    worker.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while worker._sleeps_until is None:
            assert loop.time() < deadline, "the worker never went to sleep"
            await asyncio.sleep(0.01)
        await queue.append_inbox([InboxItem(TENANT, room, change_type="updated")])
        while await queue.busy_calendars():
            assert loop.time() < deadline, "the commit did not wake the worker"
            await asyncio.sleep(0.01)
        assert worker.stats.refreshes == 1 and worker.stats.failures == 0
    finally:
        await worker.stop(grace_s=0.1)
