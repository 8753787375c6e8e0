"""The worker against the real store and queue, with an in-memory event source, on a clock the
test moves: each test runs the worker's rounds by hand (``Worker.step``) and waits for the
refreshes they started to end (``Worker.settle``), so nothing depends on how fast the machine
is. How the running loop wakes and sleeps is tests/sync/test_wake.py's."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.domain.tenancy import EventSource
from bookingcache.errors import StoreUnavailable, Throttled, UpstreamError
from bookingcache.settings import SyncSettings
from bookingcache.store.jobs import Job
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.worker import SourceSet, Worker
from tests.support.tenants import TENANT, add_tenant

from .fakes import MemorySource

GATHER = dt.timedelta(milliseconds=50)
WorkerFactory = Callable[..., Worker]


@pytest.fixture
def source(clock: FixedClock) -> MemorySource:
    return MemorySource(clock)


@pytest.fixture
def queue(store: SqlStore, clock: FixedClock) -> SqlJobQueue:
    return SqlJobQueue(store, clock=clock, coalesce_s=0.05, lease_s=5.0, max_attempts=5)


@pytest.fixture
async def make_worker(
    store: SqlStore, source: MemorySource, queue: SqlJobQueue, clock: FixedClock
) -> AsyncIterator[WorkerFactory]:
    """A worker whose rounds the test runs (it is never started)."""
    made: list[Worker] = []

    def make(
        *,
        on: SqlJobQueue | None = None,
        metrics: SyncMetrics | None = None,
        **overrides: object,
    ) -> Worker:
        """A worker on ``on`` (default: the ``queue`` fixture) with settings ``overrides``."""
        settings = SyncSettings.model_validate(
            {"backoff_base_s": 0.05, "backoff_max_s": 0.2} | overrides
        )
        worker = Worker(
            store=store,
            queue=on or queue,
            sources=SourceSet(connector=source, graph=source, push=PushSource()),
            settings=settings,
            clock=clock,
            rng=random.Random(7),
            metrics=metrics,
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(grace_s=0)


def _event(clock: FixedClock, event_id: str, hour: int) -> BasicEvent:
    start = clock.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=hour)
    return BasicEvent(id=event_id, start=start, end=start + dt.timedelta(minutes=30))


async def _cached(store: SqlStore, clock: FixedClock, mailbox: str) -> set[str]:
    now = clock.now()
    found = await store.events_in_window(
        TENANT, [mailbox], start=now - dt.timedelta(days=1), end=now + dt.timedelta(days=14)
    )
    return {event.id for event in found.get(mailbox, [])}


async def _refreshing(worker: Worker, count: int) -> None:
    """Wait until the worker runs ``count`` refreshes (a finished one's bookkeeping ended)."""
    async with asyncio.timeout(10):
        while worker.refreshing != count:
            await asyncio.sleep(0.005)


async def _round(worker: Worker) -> None:
    """One round of the worker, and the refreshes it started, to their end."""
    await worker.step()
    await worker.settle()


async def _rounds_after_gather(worker: Worker, clock: FixedClock, rounds: int = 1) -> None:
    """``rounds`` times: the clock moved past the gather delay, and a round of the worker."""
    for _ in range(rounds):
        clock.advance(GATHER)
        await _round(worker)


async def test_burst_gives_one_refresh_and_the_cache_follows(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    queue: SqlJobQueue,
    clock: FixedClock,
) -> None:
    [room, *_] = await add_tenant(store)
    worker = make_worker()
    source.put(room, _event(clock, "a", 2))
    for change in ("created", "updated", "updated", "updated"):
        await inbox.append([InboxItem(TENANT, room, change_type=change)])
    await _round(worker)
    assert source.reads[room] == 0  # the gather delay has not passed
    await _rounds_after_gather(worker, clock, 2)
    assert source.reads[room] == 1
    assert await _cached(store, clock, room) == {"a"}
    assert await queue.busy_calendars() == set()


async def test_a_stream_of_notifications_within_the_window_gives_one_refresh(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory, clock: FixedClock
) -> None:
    [room, other, _] = await add_tenant(store)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0.05, coalesce_window_s=0.4, lease_s=5.0)
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    worker = make_worker(on=queue)
    source.put(room, _event(clock, "a", 2))
    source.put(other, _event(clock, "b", 3))
    # One burst for an idle calendar: refreshed once the gather delay has passed.
    await inbox.append(
        [InboxItem(TENANT, other, change_type=c) for c in ("created", "updated", "updated")]
    )
    await _rounds_after_gather(worker, clock)
    assert source.reads[other] == 1
    # Notifications every 20 ms for 240 ms: held while they keep coming.
    for _ in range(12):
        await inbox.append([InboxItem(TENANT, room, change_type="updated")])
        clock.advance(dt.timedelta(milliseconds=20))
        await _round(worker)
        assert source.reads[room] == 0
    # They pause: claimed once quiet for the gather delay, and only once.
    await _rounds_after_gather(worker, clock, 2)
    assert source.reads[room] == 1
    assert source.reads[other] == 1
    assert await _cached(store, clock, room) == {"a"}
    assert await queue.busy_calendars() == set()


async def test_a_notification_during_a_refresh_causes_another_refresh(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    queue: SqlJobQueue,
    clock: FixedClock,
) -> None:
    [room, *_] = await add_tenant(store)
    worker = make_worker()
    gate = source.gates[room] = asyncio.Event()
    source.put(room, _event(clock, "a", 2))
    await inbox.append([InboxItem(TENANT, room)])
    clock.advance(GATHER)
    await worker.step()
    await source.started(room, 1)
    # The booking changes while the first read is in flight; the notification follows.
    source.put(room, _event(clock, "b", 3))
    await inbox.append([InboxItem(TENANT, room)])
    clock.advance(GATHER)
    await worker.step()
    assert source.reads[room] == 1  # never two refreshes of one calendar at once
    gate.set()
    await worker.settle()
    await _round(worker)
    assert source.reads[room] == 2
    assert await _cached(store, clock, room) == {"a", "b"}
    assert source.max_active[TENANT] == 1
    assert await queue.busy_calendars() == set()


async def test_per_tenant_cap_and_total_cap(
    store: SqlStore,
    make_worker: WorkerFactory,
    source: MemorySource,
    inbox: SqlInbox,
    clock: FixedClock,
) -> None:
    alpha = await add_tenant(store, "alpha", rooms=8)
    beta = await add_tenant(store, "beta", rooms=8)
    gates = {room: asyncio.Event() for room in alpha + beta}
    source.gates.update(gates)
    worker = make_worker(max_refreshes_per_tenant=2, max_refreshes_total=3)
    await inbox.append([InboxItem("alpha", room) for room in alpha])
    await inbox.append([InboxItem("beta", room) for room in beta])
    clock.advance(GATHER)
    # Three of alpha's claimed (the total); two of them read, the third waits for a slot.
    await worker.step()
    await source.wait_until(lambda: source.active["alpha"] == 2)
    assert not await worker.step()  # no room left
    # One ends: the waiting one reads; alpha is at its cap, so the next claim is beta's.
    gates[alpha[0]].set()
    await source.wait_until(lambda: sum(source.reads[room] for room in alpha) == 3)
    await _refreshing(worker, 2)
    await worker.step()
    await source.wait_until(lambda: source.active["beta"] == 1)
    assert source.max_total == 3
    for gate in gates.values():
        gate.set()
    while sum(source.reads.values()) < 16:
        await _round(worker)
    assert source.max_active["alpha"] == 2
    assert source.max_active["beta"] <= 2
    assert source.max_total == 3


async def test_throttled_waits_retry_after_and_errors_back_off(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    clock: FixedClock,
) -> None:
    [room, other, _] = await add_tenant(store)
    worker = make_worker()
    source.put(room, _event(clock, "a", 2))
    source.fail(room, Throttled("Graph answered 429", retry_after_s=0.4))
    source.fail(other, UpstreamError("connector answered 502"), UpstreamError("again"))
    await inbox.append([InboxItem(TENANT, room), InboxItem(TENANT, other)])
    await _rounds_after_gather(worker, clock)
    assert source.reads == {room: 1, other: 1}
    # The 502's backoff is at least half its 0.05 s base (jitter never takes more), and at
    # most the 0.2 s cap; the 429 waits its 0.4 s.
    clock.advance(dt.timedelta(milliseconds=24))
    await _round(worker)
    assert source.reads == {room: 1, other: 1}
    for _ in range(20):
        clock.advance(dt.timedelta(milliseconds=20))
        await _round(worker)
    assert source.reads[other] == 3  # two failures, then the read that worked
    assert source.reads[room] == 2
    first_try, retried = source.read_times[room]
    assert retried - first_try >= dt.timedelta(seconds=0.4)
    assert await _cached(store, clock, room) == {"a"}
    calendar = await store.get_calendar(TENANT, other)
    # A success after the failures clears the recorded error.
    assert calendar.last_success_at is not None
    assert calendar.last_error is None


async def test_refreshes_are_counted_by_outcome_with_their_duration(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    clock: FixedClock,
) -> None:
    [room, other, third] = await add_tenant(store)
    registry = CollectorRegistry()
    worker = make_worker(metrics=SyncMetrics(registry))
    source.put(room, _event(clock, "a", 2))
    source.fail(other, Throttled("Graph answered 429", retry_after_s=0.2))
    source.fail(third, UpstreamError("connector answered 502"))
    await inbox.append([InboxItem(TENANT, m) for m in (room, other, third)])
    await _rounds_after_gather(worker, clock)
    clock.advance(dt.timedelta(seconds=1))  # past every backoff
    await _round(worker)
    await inbox.append([InboxItem(TENANT, room)])  # read again: nothing changed
    await _rounds_after_gather(worker, clock)

    def sample(name: str, outcome: str) -> float:
        return registry.get_sample_value(name, {"outcome": outcome}) or 0.0

    assert sample("bookingcache_sync_refreshes_total", "unchanged") == 3
    assert sample("bookingcache_sync_refreshes_total", "changed") == 1
    assert sample("bookingcache_sync_refreshes_total", "throttled") == 1
    assert sample("bookingcache_sync_refreshes_total", "failed") == 1
    assert sample("bookingcache_sync_refresh_duration_seconds_count", "unchanged") == 3
    assert sample("bookingcache_sync_refresh_duration_seconds_sum", "changed") > 0
    assert registry.get_sample_value("bookingcache_sync_refreshes_running") == 0


async def test_gives_up_after_max_attempts_and_records_the_error(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0.05, lease_s=5.0, max_attempts=2)
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    worker = make_worker(on=queue)
    refused = "connector answered 401: <html>internal details</html>"
    source.fail(
        room,
        *(UpstreamError(refused, kind="connector-refused-auth", status=401) for _ in range(5)),
    )
    await inbox.append([InboxItem(TENANT, room)])
    for _ in range(5):
        clock.advance(dt.timedelta(seconds=1))
        await _round(worker)
    assert worker.stats.given_up == 1
    assert source.reads[room] == 2
    calendar = await store.get_calendar(TENANT, room)
    assert calendar.last_success_at is None
    # The calendar (which tenants see) has the class and status; the detail is for the log.
    assert calendar.last_error == "connector-refused-auth (HTTP 401)"
    assert await queue.busy_calendars() == set()


async def test_stop_hands_unfinished_jobs_back(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    queue: SqlJobQueue,
    clock: FixedClock,
) -> None:
    [room, *_] = await add_tenant(store)
    worker = make_worker()
    source.gates[room] = asyncio.Event()  # a read that never ends
    await inbox.append([InboxItem(TENANT, room)])
    clock.advance(GATHER)
    await worker.step()
    await source.started(room, 1)
    await worker.stop(grace_s=0)
    [job] = await queue.claim("next", 10)
    assert job.mailbox == room
    assert job.attempts == 0


async def test_full_resync_makes_the_source_forget_incremental_state(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    clock: FixedClock,
) -> None:
    [room, *_] = await add_tenant(store)
    worker = make_worker()
    await inbox.append([InboxItem(TENANT, room, NotificationKind.MISSED)])
    await _rounds_after_gather(worker, clock)
    assert source.reads[room] == 1
    assert source.forgotten == [room]


async def test_a_push_tenants_refresh_reads_nothing_and_leaves_the_cache(
    store: SqlStore,
    source: MemorySource,
    make_worker: WorkerFactory,
    inbox: SqlInbox,
    queue: SqlJobQueue,
    clock: FixedClock,
) -> None:
    [room] = await add_tenant(store, "pushy", rooms=1, source=EventSource.PUSH, connector_url=None)
    start = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
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
    worker = make_worker()
    await inbox.append([InboxItem("pushy", room)])
    await _rounds_after_gather(worker, clock)
    assert worker.stats.refreshes == 0
    assert source.reads[room] == 0
    assert await queue.busy_calendars() == set()
    calendar = await store.get_calendar("pushy", room)
    assert calendar.last_success_at == synced  # staleness keeps counting from the last push
    found = await store.events_in_window(
        "pushy", [room], start=start, end=start + dt.timedelta(days=1)
    )
    assert [event.id for event in found[room]] == ["p"]


class _AwayQueue(SqlJobQueue):
    """A queue whose database is away for the first ``away`` completions."""

    away = 2

    async def complete(self, job: Job) -> bool:
        if self.away:
            self.away -= 1
            raise StoreUnavailable("cannot connect to the database: connection refused")
        return await super().complete(job)


async def test_a_refresh_finished_while_the_database_is_away_is_completed_once_it_is_back(
    store: SqlStore, source: MemorySource, make_worker: WorkerFactory, clock: FixedClock
) -> None:
    """Given up at once, the completion would leave the job claimed (and its calendar's next
    refresh waiting) until the claim's lease ran out."""
    [room, *_] = await add_tenant(store)
    queue = _AwayQueue(store, clock=clock, coalesce_s=0.05, lease_s=5.0, max_attempts=5)
    worker = make_worker(on=queue)
    source.put(room, _event(clock, "a", 2))
    await queue.enqueue({(TENANT, room): clock.now()})
    await _round(worker)
    assert queue.away == 0
    assert source.reads[room] == 1
    assert await queue.busy_calendars() == set()  # completed, not left claimed
    assert await _cached(store, clock, room) == {"a"}
