"""The worker against the real store and queue, with an in-memory event source."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from bookingcache.clock import SystemClock
from bookingcache.domain.events import BasicEvent
from bookingcache.errors import Throttled, UpstreamError
from bookingcache.store.sql import SqlStore
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.model import InboxItem
from bookingcache.sync.queue import JobQueue
from bookingcache.sync.settings import SyncSettings
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.worker import SourceSet, Worker

from .conftest import TENANT, add_tenant
from .fakes import MemorySource

WorkerFactory = Callable[..., Worker]


def _event(event_id: str, hour: int) -> BasicEvent:
    day = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = day + dt.timedelta(hours=hour)
    return BasicEvent(id=event_id, start=start, end=start + dt.timedelta(minutes=30))


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def make_worker(store: SqlStore, source: MemorySource) -> AsyncIterator[WorkerFactory]:
    started: list[Worker] = []

    def make(queue: JobQueue, *, metrics: SyncMetrics | None = None, **overrides: object) -> Worker:
        settings = SyncSettings.model_validate(
            {"poll_interval_ms": 50, "backoff_base_s": 0.05, "backoff_max_s": 0.2} | overrides
        )
        sources = SourceSet(connector=source, graph=source, push=PushSource())
        worker = Worker(
            store=store,
            queue=queue,
            sources=sources,
            settings=settings,
            clock=SystemClock(),
            metrics=metrics,
        )
        worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.stop(grace_s=0.1)


def _queue(store: SqlStore, **kwargs: float) -> JobQueue:
    options = {"coalesce_s": 0.05, "lease_s": 5.0, "max_attempts": 5} | kwargs
    return JobQueue(
        store,
        clock=SystemClock(),
        coalesce_s=options["coalesce_s"],
        lease_s=options["lease_s"],
        max_attempts=int(options["max_attempts"]),
    )


async def _cached(store: SqlStore, mailbox: str) -> set[str]:
    now = dt.datetime.now(dt.UTC)
    found = await store.events_in_window(
        TENANT, [mailbox], start=now - dt.timedelta(days=1), end=now + dt.timedelta(days=14)
    )
    return {event.id for event in found.get(mailbox, [])}


async def test_burst_gives_one_refresh_and_the_cache_follows(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, *_] = await add_tenant(store)
    queue = _queue(store, coalesce_s=0.2)
    make_worker(queue)
    source.put(room, _event("a", 2))
    for change in ("created", "updated", "updated", "updated"):
        await queue.append_inbox([InboxItem(TENANT, room, change_type=change)])
    await _until(lambda: source.reads[room] >= 1)
    await asyncio.sleep(0.2)
    assert source.reads[room] == 1
    assert await _cached(store, room) == {"a"}
    assert await queue.busy_calendars() == set()


async def test_a_stream_of_notifications_within_the_window_gives_one_refresh(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, other, _] = await add_tenant(store)
    queue = JobQueue(
        store, clock=SystemClock(), coalesce_s=0.05, coalesce_window_s=0.4, lease_s=5.0
    )
    make_worker(queue)
    source.put(room, _event("a", 2))
    source.put(other, _event("b", 3))
    # One burst for an idle calendar: refreshed after the short gather delay.
    began = time.monotonic()
    await queue.append_inbox(
        [InboxItem(TENANT, other, change_type=c) for c in ("created", "updated", "updated")]
    )
    await _until(lambda: source.reads[other] >= 1)
    assert time.monotonic() - began < 0.3
    # Notifications every 20 ms for about 250 ms: held until they pause, one refresh.
    for _ in range(12):
        await queue.append_inbox([InboxItem(TENANT, room, change_type="updated")])
        await asyncio.sleep(0.02)
    await _until(lambda: source.reads[room] >= 1)
    await asyncio.sleep(0.3)
    assert source.reads[room] == 1 and source.reads[other] == 1
    assert await _cached(store, room) == {"a"}
    assert await queue.busy_calendars() == set()


async def test_a_notification_during_a_refresh_causes_another_refresh(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, *_] = await add_tenant(store)
    queue = _queue(store)
    make_worker(queue)
    gate = source.gates[room] = asyncio.Event()
    source.put(room, _event("a", 2))
    await queue.append_inbox([InboxItem(TENANT, room)])
    await _until(lambda: source.reads[room] == 1)
    # The booking changes while the first read is in flight; the notification follows.
    source.put(room, _event("b", 3))
    await queue.append_inbox([InboxItem(TENANT, room)])
    await asyncio.sleep(0.2)
    assert source.reads[room] == 1  # never two refreshes of one calendar at once
    gate.set()
    await _until(lambda: source.reads[room] == 2)
    await asyncio.sleep(0.1)
    assert await _cached(store, room) == {"a", "b"}
    assert source.max_active[TENANT] == 1
    assert await queue.busy_calendars() == set()


async def test_per_tenant_cap_and_total_cap(
    store: SqlStore, make_worker: WorkerFactory, source: MemorySource
) -> None:
    alpha = await add_tenant(store, "alpha", rooms=8)
    beta = await add_tenant(store, "beta", rooms=8)
    source.delay_s = 0.1
    queue = _queue(store)
    make_worker(queue, max_refreshes_per_tenant=2, max_refreshes_total=3)
    await queue.append_inbox([InboxItem("alpha", room) for room in alpha])
    await queue.append_inbox([InboxItem("beta", room) for room in beta])
    await _until(lambda: sum(source.reads.values()) == 16, timeout_s=10)
    assert source.max_active["alpha"] == 2 and source.max_active["beta"] == 2
    assert source.max_total == 3


async def test_throttled_waits_retry_after_and_errors_back_off(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, other, _] = await add_tenant(store)
    queue = _queue(store)
    make_worker(queue)
    source.put(room, _event("a", 2))
    source.fail(room, Throttled("Graph answered 429", retry_after_s=0.4))
    source.fail(other, UpstreamError("connector answered 502"), UpstreamError("again"))
    await queue.append_inbox([InboxItem(TENANT, room), InboxItem(TENANT, other)])
    await _until(lambda: source.reads[room] == 2 and source.reads[other] == 3)
    first, second = source.read_times[room]
    assert second - first >= 0.4
    times = source.read_times[other]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.025 for gap in gaps)  # half the 0.05 s base is never jittered away
    await asyncio.sleep(0.1)
    assert await _cached(store, room) == {"a"}
    calendar = await store.get_calendar(TENANT, other)
    # A success after the failures clears the recorded error.
    assert calendar.last_success_at is not None and calendar.last_error is None


async def test_refreshes_are_counted_by_outcome_with_their_duration(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, other, third] = await add_tenant(store)
    registry = CollectorRegistry()
    queue = _queue(store)
    make_worker(queue, metrics=SyncMetrics(registry))
    source.put(room, _event("a", 2))
    source.fail(other, Throttled("Graph answered 429", retry_after_s=0.2))
    source.fail(third, UpstreamError("connector answered 502"))
    await queue.append_inbox([InboxItem(TENANT, m) for m in (room, other, third)])
    await _until(lambda: source.reads[other] == 2 and source.reads[third] == 2)
    await queue.append_inbox([InboxItem(TENANT, room)])  # read again: nothing changed
    await _until(lambda: source.reads[room] == 2)

    def sample(name: str, outcome: str) -> float:
        return registry.get_sample_value(name, {"outcome": outcome}) or 0.0

    await _until(lambda: sample("bookingcache_sync_refreshes_total", "unchanged") == 3)
    assert sample("bookingcache_sync_refreshes_total", "changed") == 1
    assert sample("bookingcache_sync_refreshes_total", "throttled") == 1
    assert sample("bookingcache_sync_refreshes_total", "failed") == 1
    assert sample("bookingcache_sync_refresh_duration_seconds_count", "unchanged") == 3
    assert sample("bookingcache_sync_refresh_duration_seconds_sum", "changed") > 0
    await _until(lambda: registry.get_sample_value("bookingcache_sync_refreshes_running") == 0)
    await _until(lambda: registry.get_sample_value("bookingcache_sync_queue_depth") == 0)


async def test_gives_up_after_max_attempts_and_records_the_error(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, *_] = await add_tenant(store)
    queue = _queue(store, max_attempts=2)
    worker = make_worker(queue)
    source.fail(room, *(UpstreamError("connector answered 401") for _ in range(5)))
    await queue.append_inbox([InboxItem(TENANT, room)])
    await _until(lambda: worker.stats.given_up == 1)
    await asyncio.sleep(0.3)
    assert source.reads[room] == 2
    calendar = await store.get_calendar(TENANT, room)
    assert calendar.last_success_at is None
    assert calendar.last_error is not None and "401" in calendar.last_error
    assert await queue.busy_calendars() == set()


async def test_stop_hands_unfinished_jobs_back(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    [room, *_] = await add_tenant(store)
    queue = _queue(store)
    worker = make_worker(queue)
    source.gates[room] = asyncio.Event()  # a read that never ends
    await queue.append_inbox([InboxItem(TENANT, room)])
    await _until(lambda: source.reads[room] == 1)
    await worker.stop(grace_s=0.05)
    [job] = await queue.claim("next", 10)
    assert job.mailbox == room and job.attempts == 0


async def test_full_resync_makes_the_source_forget_incremental_state(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    from bookingcache.sync.model import NotificationKind

    [room, *_] = await add_tenant(store)
    queue = _queue(store)
    make_worker(queue)
    await queue.append_inbox([InboxItem(TENANT, room, NotificationKind.MISSED)])
    await _until(lambda: source.reads[room] == 1)
    assert source.forgotten == [room]


async def test_a_push_tenants_refresh_reads_nothing_and_leaves_the_cache(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory
) -> None:
    from bookingcache.domain.tenancy import EventSource

    [room] = await add_tenant(store, "pushy", rooms=1, source=EventSource.PUSH, connector_url=None)
    start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    pushed = BasicEvent(id="p", start=start, end=start + dt.timedelta(hours=1))
    synced = start + dt.timedelta(minutes=1)
    await store.replace_window(
        "pushy",
        room,
        window_start=start,
        window_end=start + dt.timedelta(days=1),
        events=[pushed],
        synced_at=synced,
    )
    queue = _queue(store)
    worker = make_worker(queue)
    await queue.append_inbox([InboxItem("pushy", room)])
    await _until(lambda: not worker._running and source.reads[room] == 0)
    await asyncio.sleep(0.2)
    assert await queue.busy_calendars() == set()
    calendar = await store.get_calendar("pushy", room)
    assert calendar.last_success_at == synced  # staleness keeps counting from the last push
    found = await store.events_in_window(
        "pushy", [room], start=start, end=start + dt.timedelta(days=1)
    )
    assert [event.id for event in found[room]] == ["p"]
