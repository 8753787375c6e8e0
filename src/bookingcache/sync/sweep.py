"""The reconciliation sweep: the safety net that repairs missed or silent notifications.

Every ``interval_s`` it gives a refresh to each calendar that has no pending or running job and
whose bound runs out before the next pass: the bound is how old its last successful refresh may
grow. A calendar whose subscription is listening gets the tenant's long bound (``healthy_bound_s``
capped by the tenant's staleness bound), every other one ``bound_s`` (``sync.cadence``). Each
calendar is read at its own stable instant of its bound, so calendars refreshed together are
read spread over the bound, not in a wave; or one bound after a read its change notification
asked for, so a calendar that notifications keep reading needs no sweep read. Calendars
already past their bound (never read, or the service was down) are spread out from now: one
every ``min(bound_s / n, 1 / rate_per_s)`` seconds, so they never burst, yet all of them fall
within ``bound_s``. Push tenants are left out: the service has nothing to read for them, their
data ages into ``unknown`` instead.

A sweep refresh is an ordinary one: with ``Calendars.Read`` a calendarView delta round, which
costs one request for an unchanged calendar (``docs/sync.md``, "The reconciliation sweep").

Each pass also drops the inbox's record of notifications older than the retention (default
7 days); what they asked for was done long before, by their calendars' jobs.

Both are cluster duties (``sweep`` and ``retention``): every worker runs the timer, but only the
holder of each duty's lease acts, after confirming the lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass

from bookingcache.clock import Clock
from bookingcache.domain.tenancy import EventSource as SourceKind
from bookingcache.domain.tenancy import Tenant
from bookingcache.store.duties import RETENTION, SWEEP, DutyKeeper, Lease, LeaseLost
from bookingcache.store.dutystate import DutyState
from bookingcache.store.inbox import Inbox
from bookingcache.store.jobs import JobQueue
from bookingcache.store.port import Store
from bookingcache.store.subscriptions import Subscriptions
from bookingcache.sync import cadence
from bookingcache.sync.metrics import SyncMetrics

log = logging.getLogger(__name__)

_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)
# What ``_holding`` answers for a sweep built without a cluster: every pass is its own.
_FREE = Lease("", "", 0, dt.datetime.max.replace(tzinfo=dt.UTC))

Key = tuple[str, str]

# The bound label of ``bookingcache_sync_sweep_reads_total``.
LONG, SHORT, OVERDUE = "long", "short", "overdue"


@dataclass(frozen=True, slots=True)
class _Bound:
    """A readable calendar as the sweep sees it now."""

    key: Key
    last_success_at: dt.datetime | None
    bound_s: float
    # Whether ``bound_s`` is the long bound (its subscription is listening).
    heard: bool = False
    # Its last change notification.
    notified_at: dt.datetime | None = None


class Sweep:
    def __init__(
        self,
        *,
        store: Store,
        queue: JobQueue,
        inbox: Inbox,
        clock: Clock,
        bound_s: float = 900.0,
        healthy_bound_s: float = 4 * 3600.0,
        interval_s: float = 30.0,
        rate_per_s: float = 5.0,
        inbox_retention_s: float = 7 * 86_400.0,
        change_feed_retention_s: float = 86_400.0,
        duties: DutyKeeper | None = None,
        subscriptions: Subscriptions | None = None,
        duty_state: DutyState | None = None,
        metrics: SyncMetrics | None = None,
    ) -> None:
        """Without ``subscriptions`` no calendar counts as listening: all have ``bound_s``.
        ``duty_state`` gives the silence duty's judgements."""
        self._store = store
        self._queue = queue
        self._inbox = inbox
        self._clock = clock
        self.bound_s = bound_s
        self.healthy_bound_s = healthy_bound_s
        self.interval_s = interval_s
        self.rate_per_s = rate_per_s
        self.inbox_retention_s = inbox_retention_s
        self.change_feed_retention_s = change_feed_retention_s
        self.duties = duties
        self._subscriptions = subscriptions
        self._duty_state = duty_state
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, *, fence: Lease | None = None) -> int:
        """One pass; returns how many refreshes it scheduled. With ``fence`` (the sweep duty's
        lease) the refreshes are queued only while the lease holds."""
        now = self._clock.now()
        horizon = now + dt.timedelta(seconds=self.interval_s)
        overdue: list[tuple[dt.datetime, Key]] = []
        upcoming: dict[Key, dt.datetime] = {}
        bounds: dict[Key, str] = {}
        for found in await self._bounds(now):
            key, last_success_at = found.key, found.last_success_at
            if last_success_at is None:
                overdue.append((_NEVER, key))
                continue
            at = cadence.due(
                last_success_at,
                bound_s=found.bound_s,
                at=cadence.phase(*key),
                notified_at=found.notified_at,
            )
            if at <= now:
                overdue.append((last_success_at, key))
            elif at <= horizon:
                upcoming[key] = at
                bounds[key] = LONG if found.heard else SHORT
        if not overdue and not upcoming:
            return 0
        busy = await self._queue.busy_calendars()
        overdue = sorted(item for item in overdue if item[1] not in busy)
        due = {key: at for key, at in upcoming.items() if key not in busy}
        spacing_s = min(self.bound_s / max(len(overdue), 1), 1 / self.rate_per_s)
        for index, (_, key) in enumerate(overdue):
            due[key] = now + dt.timedelta(seconds=index * spacing_s)
            bounds[key] = OVERDUE
        if not due:
            return 0
        scheduled = await self._queue.enqueue(due, fence=fence)
        if self._metrics is not None:
            for label, count in Counter(bounds[key] for key in due).items():
                self._metrics.sweep_asked.labels(bound=label).inc(count)
        if scheduled:
            log.info(
                "sweep scheduled %d calendars (%d past their bound, spread over %.1fs)",
                scheduled,
                len(overdue),
                len(overdue) * spacing_s,
            )
        return scheduled

    async def _bounds(self, now: dt.datetime) -> list[_Bound]:
        """Each readable calendar with its last success and its bound now."""
        readable = {
            tenant.id: tenant
            for tenant in await self._store.list_tenants()
            if SourceKind(tenant.event_source) is not SourceKind.PUSH
        }
        if self._subscriptions is None:
            return [
                _Bound(
                    (calendar.tenant_id, calendar.mailbox), calendar.last_success_at, self.bound_s
                )
                for calendar in await self._store.list_calendars()
                if calendar.tenant_id in readable
            ]
        records = await self._subscriptions.calendars()
        silence = {} if self._duty_state is None else await self._duty_state.silence_records()
        tenant_notified: dict[str, dt.datetime] = {}
        for record in records:
            at = record.last_notification_at
            if at is not None:
                tenant_notified[record.tenant_id] = max(
                    at, tenant_notified.get(record.tenant_id, at)
                )
        found = []
        for record in records:
            tenant = readable.get(record.tenant_id)
            if tenant is None:
                continue
            key = (record.tenant_id, record.mailbox)
            long_s = self._long_bound_s(tenant)
            heard = cadence.listening(
                record,
                silence.get(key),
                now=now,
                bound_s=long_s,
                tenant_notified_at=tenant_notified.get(record.tenant_id),
            )
            found.append(
                _Bound(
                    key,
                    record.last_success_at,
                    long_s if heard else self.bound_s,
                    heard=heard,
                    notified_at=record.last_notification_at,
                )
            )
        return found

    def _long_bound_s(self, tenant: Tenant) -> float:
        return cadence.long_bound_s(
            short_s=self.bound_s,
            healthy_s=self.healthy_bound_s,
            staleness_s=tenant.staleness_bound_s,
        )

    async def prune_inbox(self) -> int:
        """Drop the inbox's record of notifications older than the retention."""
        cutoff = self._clock.now() - dt.timedelta(seconds=self.inbox_retention_s)
        pruned = await self._inbox.prune(cutoff)
        if pruned:
            log.info("pruned %d inbox rows received before %s", pruned, cutoff.isoformat())
        return pruned

    async def prune_change_feed(self) -> int:
        """Drop the change feed's rows older than its retention (the newest is always kept)."""
        cutoff = self._clock.now() - dt.timedelta(seconds=self.change_feed_retention_s)
        pruned = await self._store.prune_changes(before=cutoff)
        if pruned:
            log.info("pruned %d change-feed rows from before %s", pruned, cutoff.isoformat())
        return pruned

    async def run(self) -> None:
        while True:
            try:
                lease = await self._holding(SWEEP)
                if lease is not None:
                    await self.run_once(fence=None if lease is _FREE else lease)
            except LeaseLost:
                log.warning("the sweep duty's lease was lost: the pass queued nothing")
            except Exception:  # the timer must outlive a failed pass
                log.exception("reconciliation sweep failed")
            try:
                if await self._holding(RETENTION) is not None:
                    await self.prune_inbox()
                    await self.prune_change_feed()
            except Exception:
                log.exception("pruning the inbox or the change feed failed")
            await asyncio.sleep(self._pause())

    async def _holding(self, duty: str) -> Lease | None:
        """The confirmed lease when this process acts for ``duty`` now (counting the run);
        ``_FREE`` without a cluster; None: not this process's."""
        if self.duties is None:
            return _FREE
        lease = await self.duties.confirm(duty)
        if lease is not None:
            self.duties.ran(duty)
        return lease

    def _pause(self) -> float:
        """Until the next pass: the interval, or, while another process holds the duties, no
        longer than a lease renewal, so a duty taken over runs within its bound."""
        if self.duties is None or self.duties.holds(SWEEP):
            return self.interval_s
        return min(self.interval_s, self.duties.renew_s)

    def start(self) -> None:
        if self.duties is not None:
            self.duties.want([SWEEP, RETENTION])
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="reconciliation sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
