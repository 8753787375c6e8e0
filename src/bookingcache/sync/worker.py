"""The worker: claims due refresh jobs and runs them, each a read of the calendar window from the
tenant's event source followed by the store's replace-window (whose diff feeds the change feed).

- At most ``max_refreshes_total`` refreshes run in the process, at most
  ``max_refreshes_per_tenant`` of one tenant; the queue guarantees one per calendar.
- Each claim also finds when to look again (the next job falling due, a held-back job's
  release, a lease running out). Intake in the same process tells it the due time of the jobs
  it enqueues (a queue listener), a finished refresh makes it look a moment later, and
  otherwise it polls, so several worker processes share one database.
- A failed refresh is retried through ``JobQueue.retry`` (the one backoff path): ``Throttled``
  waits its ``Retry-After``, anything else waits an exponential backoff with jitter, up to the
  queue's maximum attempts. The error is recorded on the calendar either way.
- Leases are renewed while refreshes run; ``stop`` lets running refreshes finish within a grace
  period and hands the rest back to the queue. Bookkeeping runs under ``asyncio.shield`` so a
  cancellation cannot lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bookingcache.clock import Clock
from bookingcache.domain.tenancy import EventSource as SourceKind
from bookingcache.domain.tenancy import Tenant
from bookingcache.domain.titles import withhold_titles
from bookingcache.errors import (
    BookingCacheError,
    NotFound,
    StoreUnavailable,
    Throttled,
    public_error,
)
from bookingcache.settings import SyncSettings
from bookingcache.store.jobs import ClaimLost, Job, JobQueue
from bookingcache.store.port import Store
from bookingcache.sync import metrics as outcomes
from bookingcache.sync.directory import SyncDirectory
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.sources import EventSource
from bookingcache.sync.timing import backoff_s, refresh_window

log = logging.getLogger(__name__)

T = TypeVar("T")


class SourceSet:
    """The event source for each kind of tenant."""

    def __init__(self, *, connector: EventSource, graph: EventSource, push: EventSource) -> None:
        self._sources = {
            SourceKind.CONNECTOR: connector,
            SourceKind.GRAPH: graph,
            SourceKind.PUSH: push,
        }

    def for_tenant(self, tenant: Tenant) -> EventSource:
        return self._sources[SourceKind(tenant.event_source)]

    async def aclose(self) -> None:
        for source in {id(s): s for s in self._sources.values()}.values():
            await source.aclose()


@dataclass(slots=True)
class WorkerStats:
    refreshes: int = 0
    changed: int = 0
    failures: int = 0
    throttled: int = 0
    given_up: int = 0
    by_calendar: Counter[tuple[str, str]] = field(default_factory=Counter)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        queue: JobQueue,
        sources: SourceSet,
        settings: SyncSettings,
        clock: Clock,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        metrics: SyncMetrics | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._sources = sources
        self._settings = settings
        self._clock = clock
        self.worker_id = worker_id or default_worker_id()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self._wake = asyncio.Event()
        # While the loop sleeps: when it will look again by itself (None while it is awake).
        self._sleeps_until: dt.datetime | None = None
        # While it is awake: the earliest due time it was told of meanwhile (its next sleep
        # ends then at the latest).
        self._told_due: dt.datetime | None = None
        self._stopping = False
        self._running: dict[asyncio.Task[None], Job] = {}
        self._per_tenant: Counter[str] = Counter()
        self._tenant_slots: dict[str, asyncio.Semaphore] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self.stats = WorkerStats()
        self._metrics = metrics
        self._directory = SyncDirectory(store)
        queue.add_listener(self.wake)

    def wake(self, due: dt.datetime | None = None) -> None:
        """Look for due work now; or, given when new work falls due, look then if the loop
        would otherwise sleep past it. A busy intake commits far more often than jobs fall due,
        so its commits only ever shorten the current sleep, never cut it off at once; told
        while awake, it keeps the due time for its next sleep."""
        until = self._sleeps_until
        if due is None:
            self._wake.set()
            return
        if until is None:
            if self._told_due is None or due < self._told_due:
                self._told_due = due
            return
        if due >= until:
            return
        self._sleeps_until = due
        delay_s = (due - self._clock.now()).total_seconds()
        if delay_s <= 0:
            self._wake.set()
        else:
            asyncio.get_running_loop().call_later(delay_s, self._wake.set)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self.run(), name=f"worker {self.worker_id}")
            self._lease_task = asyncio.create_task(self._keep_leases(), name="worker leases")

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Stop claiming; let running refreshes finish for up to ``grace_s``, then cancel them,
        which hands their jobs back to the queue."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace_s)
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        self._loop_task = self._lease_task = None

    async def run(self) -> None:
        poll_s = self._settings.poll_interval_ms / 1000
        gap_s = min(self._settings.claim_gap_ms / 1000, poll_s)
        while not self._stopping:
            self._wake.clear()
            timeout_s = poll_s
            try:
                # At capacity there is nothing to claim: a finishing refresh wakes the loop.
                if len(self._running) < self._settings.max_refreshes_total:
                    if await self._claim_some():
                        continue  # a full batch: more may be due right away
                    # The claim found when to look again: the next job falling due, a
                    # held-back job's release (its notifications keep coming), or a lease.
                    upcoming = self._queue.upcoming
                    if upcoming is not None:
                        until_s = (upcoming - self._clock.now()).total_seconds()
                        timeout_s = min(poll_s, max(0.0, until_s))
                if self._metrics is not None:
                    self._metrics.queue_depth.set(self._queue.depth)
                    oldest = self._queue.oldest_due
                    waited = (self._clock.now() - oldest).total_seconds() if oldest else 0.0
                    self._metrics.queue_oldest.set(max(0.0, waited))
            except Exception:  # the loop must survive a database hiccup
                log.exception("worker %s: claiming failed", self.worker_id)
            if self._stopping:
                break
            now = self._clock.now()
            told, self._told_due = self._told_due, None
            if told is not None:
                timeout_s = min(timeout_s, (told - now).total_seconds())
            timeout_s = max(timeout_s, gap_s)
            self._sleeps_until = now + dt.timedelta(seconds=timeout_s)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout_s)
            finally:
                self._sleeps_until = None

    @property
    def refreshing(self) -> int:
        """Refreshes running in this worker now."""
        return len(self._running)

    async def step(self) -> bool:
        """One round of the loop's work, run by hand (tests, tools): claim as many due jobs as
        there is room for and start their refreshes. True when the claim was full."""
        return await self._claim_some()

    async def settle(self) -> None:
        """Wait until every refresh started so far has ended, its bookkeeping included."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _claim_some(self) -> bool:
        """Claim as many jobs as there is room for; True when the claim was full (more may be
        due right away)."""
        room = self._settings.max_refreshes_total - len(self._running)
        if room <= 0:
            return False
        limit = min(room, self._settings.claim_batch)
        cap = self._settings.max_refreshes_per_tenant
        full = [tenant for tenant, count in self._per_tenant.items() if count >= cap]
        jobs = await self._queue.claim(self.worker_id, limit, exclude_tenants=full)
        for job in jobs:
            self._per_tenant[job.tenant_id] += 1
            task = asyncio.create_task(self._run_job(job), name=f"refresh {job.mailbox}")
            self._running[task] = job
            task.add_done_callback(self._finished)
        if self._metrics is not None:
            self._metrics.running.set(len(self._running))
        return len(jobs) >= limit

    def _finished(self, task: asyncio.Task[None]) -> None:
        job = self._running.pop(task, None)
        if job is not None:
            self._per_tenant[job.tenant_id] -= 1
            if self._per_tenant[job.tenant_id] <= 0:
                del self._per_tenant[job.tenant_id]
        if self._metrics is not None:
            self._metrics.running.set(len(self._running))
        # Refreshes ending together lead to one claim: the loop looks a moment later.
        self.wake(self._clock.now() + dt.timedelta(milliseconds=self._settings.claim_gap_ms))

    async def _keep_leases(self) -> None:
        interval_s = max(0.05, self._queue.lease_s / 3)
        while True:
            await asyncio.sleep(interval_s)
            for job in list(self._running.values()):
                try:
                    await self._queue.extend(job)
                except Exception:
                    log.exception("worker %s: renewing the lease of %s failed", self.worker_id, job)

    # --- one job -----------------------------------------------------------------------------
    def _slot(self, tenant_id: str) -> asyncio.Semaphore:
        slot = self._tenant_slots.get(tenant_id)
        if slot is None:
            slot = asyncio.Semaphore(self._settings.max_refreshes_per_tenant)
            self._tenant_slots[tenant_id] = slot
        return slot

    async def _run_job(self, job: Job) -> None:
        began = time.perf_counter()
        outcome = outcomes.FAILED
        try:
            async with self._slot(job.tenant_id):
                outcome = await self._refresh(job)
        except asyncio.CancelledError:
            outcome = ""
            await self._bookkeep(lambda: self._queue.release(job), patient=False)
            raise
        except ClaimLost:
            # Another worker took the job over while this one read (this process stalled past
            # its lease, or was taken for dead): its read is newer; this one is dropped, and
            # the job is the new claim's to finish.
            outcome = outcomes.SUPERSEDED
            log.info(
                "refresh of %s/%s superseded: its claim was taken over", job.tenant_id, job.mailbox
            )
        except NotFound as exc:
            # The tenant or calendar went away: nothing left to refresh.
            outcome = outcomes.GONE
            self._directory.forget(job.tenant_id)
            log.info("job %s for %s/%s dropped: %s", job.id, job.tenant_id, job.mailbox, exc)
            await self._bookkeep(lambda: self._queue.complete(job))
        except Throttled as exc:
            outcome = outcomes.THROTTLED
            self.stats.throttled += 1
            delay_s = exc.retry_after_s
            if delay_s is None:
                delay_s = self._backoff(job)
            await self._failed(job, exc, delay_s)
        except BookingCacheError as exc:
            await self._failed(job, exc, self._backoff(job))
        except Exception as exc:  # the job boundary: log with the job, retry later
            log.exception("refresh job %s for %s/%s crashed", job.id, job.tenant_id, job.mailbox)
            await self._failed(job, exc, self._backoff(job))
        else:
            await self._bookkeep(lambda: self._queue.complete(job))
        finally:
            if self._metrics is not None and outcome:
                self._metrics.refreshes.labels(outcome).inc()
                self._metrics.duration.labels(outcome).observe(time.perf_counter() - began)

    def _backoff(self, job: Job) -> float:
        return backoff_s(
            job.attempts + 1,
            base_s=self._settings.backoff_base_s,
            max_s=self._settings.backoff_max_s,
            rng=self._rng,
        )

    async def _failed(self, job: Job, exc: BaseException, delay_s: float) -> None:
        self.stats.failures += 1
        # The log and the job keep the detail; the calendar, which tenants see in the
        # subscription health, only the class of the failure and an upstream status.
        error = f"{exc.__class__.__name__}: {exc}"
        log.warning(
            "refresh of %s/%s failed (attempt %d), retrying in %.2fs: %s",
            job.tenant_id,
            job.mailbox,
            job.attempts + 1,
            delay_s,
            error,
        )
        at = self._clock.now()
        await self._bookkeep(
            lambda: self._store.record_sync_error(
                job.tenant_id, job.mailbox, error=public_error(exc), at=at
            )
        )
        kept = await self._bookkeep(lambda: self._queue.retry(job, defer_s=delay_s, error=error))
        if kept is False and job.attempts + 1 >= self._queue.max_attempts:
            self.stats.given_up += 1
            log.error(
                "refresh of %s/%s gave up after %d attempts: %s",
                job.tenant_id,
                job.mailbox,
                job.attempts + 1,
                error,
            )

    async def _bookkeep(
        self, operation: Callable[[], Awaitable[T]], *, patient: bool = True
    ) -> T | None:
        """Settle a job in the queue. While the database is away, ``patient`` bookkeeping is
        tried again (backing off to every 5 s) for as long as the claim's lease runs: given up
        at once, a finished or failed refresh would leave its job claimed until the lease ran
        out, and its calendar unread for that long after the database came back."""
        deadline = time.monotonic() + self._queue.lease_s
        delay_s = 0.25
        waited = False
        while True:
            try:
                return await asyncio.shield(operation())
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                if not patient or time.monotonic() + delay_s > deadline:
                    log.error("worker %s: queue bookkeeping failed: %s", self.worker_id, exc)
                    return None
                if not waited:
                    log.warning("worker %s: bookkeeping waits for the database", self.worker_id)
                    waited = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
            except Exception:
                log.exception("worker %s: queue bookkeeping failed", self.worker_id)
                return None

    async def _refresh(self, job: Job) -> str:
        """One refresh; returns its outcome (``sync.metrics``)."""
        began = self._clock.now()
        if job.full_resync:
            # A resync (asked for after a change of the tenant's title policy, say) works with
            # the tenant's settings as they are now, not as the directory cached them.
            self._directory.forget(job.tenant_id)
        tenant, calendar = await self._directory.lookup(job.tenant_id, job.mailbox)
        source = self._sources.for_tenant(tenant)
        start, end = refresh_window(
            self._clock.now(),
            calendar.time_zone,
            days=self._settings.window_days,
            past_days=self._settings.window_past_days,
        )
        if job.full_resync:
            source.forget(job.tenant_id, job.mailbox)
        events = await source.read_window(calendar, start=start, end=end)
        read = self._clock.now()
        if events is None:
            return outcomes.SKIPPED
        # A delta source's link for this window goes into the same transaction as its events,
        # which keep no title the tenant's policy withholds.
        diff = await self._store.replace_window(
            job.tenant_id,
            job.mailbox,
            window_start=start,
            window_end=end,
            events=withhold_titles(events, tenant.title_policy),
            synced_at=self._clock.now(),
            delta_link=source.delta_link_of(job.tenant_id, job.mailbox),
            claim=(job.id, job.lease),
        )
        log.debug(
            "refreshed %s/%s: %d events, %s, read %.0f ms, write %.0f ms",
            job.tenant_id,
            job.mailbox,
            len(events),
            "changed" if not diff.is_empty else "unchanged",
            (read - began).total_seconds() * 1000,
            (self._clock.now() - read).total_seconds() * 1000,
        )
        self.stats.refreshes += 1
        self.stats.by_calendar[(job.tenant_id, job.mailbox)] += 1
        if diff.is_empty:
            return outcomes.UNCHANGED
        self.stats.changed += 1
        return outcomes.CHANGED
