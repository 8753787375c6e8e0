"""Desired state, converged: a tenant's subscription set follows from its linked rooms.

A change of room links schedules a debounced converge of that tenant: one signed
``PUT {connector}/v1/subscriptions`` with every linked mailbox, the tenant's notification URLs
and its current clientState; the connector's rows are stored where the intake looks
subscriptions up. When more than ``SUBSCRIBE_PART`` calendars have no subscription yet (a
tenant onboarded), they are first subscribed part by part with ``PATCH``. A timer converges again

- every tenant every ``reconverge_every_s`` and whenever a subscription expires within
  ``renew_within_s``, so renewal never rests on the connector's own timer alone;
- at once after a lifecycle event marked a subscription (``subscriptionRemoved``,
  ``reauthorizationRequired``) or a notification came from a subscription the service does
  not know;
- when the backoff of a mailbox (or a whole connector) that failed has run out;
- within a tick when a tenant's way in (its notification mode or connector URL, set through the
  admin API in any process) is no longer the one its subscriptions were converged to.

Calendars whose subscription is new are refreshed once, so changes made while no subscription
delivered (between an old subscription and its replacement) are read; calendars that turned
``silent`` are refreshed every ``silent_resync_s`` until notifications return.

The timer is the ``converge`` cluster duty: every API process runs it, but only the holder of
the duty's lease acts, after confirming the lease. Each tenant's converge timing (when it was
last converged, and a debounced converge any process asked for) lives in the database
(``store.dutystate``), so that whichever process holds the duty honours it.

It runs a little over 500 lines: the converge of a tenant and the timer that decides when to
run one share the backoff and the lifecycle marks, and each is read with the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from math import inf

from bookingcache.clock import Clock
from bookingcache.contract.client import ConnectorClient
from bookingcache.domain.subscriptions import NEW, RENEW, ConvergedSubscription, Mark
from bookingcache.domain.tenancy import NotificationMode, Tenant
from bookingcache.errors import (
    CONNECTOR_NOT_CONFIGURED,
    SUBSCRIPTION_FAILED,
    BookingCacheError,
    NotFound,
    Throttled,
    UpstreamError,
    public_error,
)
from bookingcache.orchestration.health import CalendarHealth, HealthMetrics, fresh_since, judge
from bookingcache.orchestration.silence import SilenceTracker
from bookingcache.settings import OrchestrationSettings
from bookingcache.store.duties import CONVERGE, DutyKeeper
from bookingcache.store.dutystate import DutyState
from bookingcache.store.jobs import JobQueue
from bookingcache.store.port import Store
from bookingcache.store.subscriptions import Subscriptions

log = logging.getLogger(__name__)

_PUBLISH_EVERY_S = 15.0

# Graph's subscription API takes 500 writes per 20 s per app and tenant: calendars without a
# subscription are subscribed in parts of this many, one window's writes each.
SUBSCRIBE_PART = 500


@dataclass(slots=True)
class ConvergeResult:
    tenant_id: str
    rows: list[ConvergedSubscription] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> list[str]:
        return [row.mailbox for row in self.rows if row.failed]


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0


class Orchestrator:
    def __init__(
        self,
        *,
        store: Store,
        subscriptions: Subscriptions,
        queue: JobQueue,
        connector: ConnectorClient,
        clock: Clock,
        public_base_url: str,
        settings: OrchestrationSettings,
        metrics: HealthMetrics,
        state: DutyState,
        duties: DutyKeeper | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock
        self._queue = queue
        self._base_url = public_base_url.rstrip("/")
        self.subscriptions = subscriptions
        self.metrics = metrics
        self._state = state
        self.duties = duties
        self.silence = SilenceTracker(
            subscriptions,
            state,
            clock=clock,
            silent_after=settings.silent_after,
            observe_lag=self.metrics.notification_lag.observe,
            duties=duties,
        )
        self._connector = connector
        # Each tenant's way in as last converged (by this process, while it holds the duty).
        self._ways_in: dict[str, tuple[str, str | None]] = {}
        # The earliest debounced converge the last tick saw (the timer wakes for it).
        self._next_due: dt.datetime | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self._backoff: dict[str, _Backoff] = {}  # tenant (whole call) or tenant/mailbox
        self._locks: dict[str, asyncio.Lock] = {}
        self._silent_refreshed: dict[tuple[str, str], float] = {}
        self._published = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None

    # --- wiring --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is not None:
            return
        self._store.add_rooms_listener(self.rooms_changed)
        self._store.add_tenants_listener(self.tenant_changed)
        if self.duties is not None:
            self.duties.want([CONVERGE])
        self._task = asyncio.create_task(self._run(), name="subscription orchestration")
        self._follower = asyncio.create_task(
            self.silence.follow(self._store, interval_s=min(self.settings.tick_s, 1.0)),
            name="subscription silence",
        )

    async def stop(self) -> None:
        self._store.remove_rooms_listener(self.rooms_changed)
        self._store.remove_tenants_listener(self.tenant_changed)
        tasks = [t for t in (self._task, self._follower, *self._requests) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._follower = None

    def rooms_changed(self, tenant_id: str) -> None:
        """A room link of ``tenant_id`` changed (the store's rooms listener)."""
        self.schedule(tenant_id)

    def tenant_changed(self, _tenant_id: str) -> None:
        """A tenant's settings changed in this process: the next tick, now, sees whether its
        way in moved (changes made in other processes are seen at the next tick)."""
        self._wake.set()

    def unknown_subscription(self, tenant_id: str) -> None:
        """A notification named a subscription the service does not know: the connector and
        the service disagree, converge (at most once per ``react_min_interval_s`` after the
        tenant's last converge, in whichever process: a deleted subscription may keep
        delivering for a while)."""
        self._in_background(self._react(tenant_id))

    async def _react(self, tenant_id: str) -> None:
        await self._state.request_converge(
            tenant_id,
            self._clock.now(),
            restart=False,
            after_last_s=self.settings.react_min_interval_s,
        )
        self._wake.set()

    def schedule(self, tenant_id: str, *, delay_s: float | None = None) -> None:
        """Converge the tenant ``delay_s`` from now (default: the debounce, which a new room
        change restarts), whichever process holds the converge duty."""
        self._in_background(self._schedule(tenant_id, delay_s))

    async def _schedule(self, tenant_id: str, delay_s: float | None) -> None:
        delay = self.settings.debounce_s if delay_s is None else delay_s
        due = self._clock.now() + dt.timedelta(seconds=delay)
        await self._state.request_converge(tenant_id, due, restart=delay_s is None)
        self._wake.set()

    def _in_background(self, request: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(_logged(request), name="converge request")
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    # --- the timer -----------------------------------------------------------------------------
    async def _run(self) -> None:
        # A tenant never converged is due at once, so the first tick converges all.
        while True:
            try:
                await self.tick()
            except Exception:  # the timer must outlive a failed pass
                log.exception("subscription orchestration pass failed")
            wait = self.settings.tick_s
            if self._next_due is not None:
                until_due = (self._next_due - self._clock.now()).total_seconds()
                wait = max(0.0, min(wait, until_due))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _tenant_ids(self) -> tuple[list[str], set[str]]:
        """Every tenant, and those whose way in moved since their last converge (due now)."""
        tenants = await self._store.list_tenants()
        moved = set()
        for tenant in tenants:
            converged = self._ways_in.get(tenant.id)
            if converged is not None and converged != _way_in(tenant):
                moved.add(tenant.id)
        return [tenant.id for tenant in tenants], moved

    async def tick(self) -> None:
        """One pass of the timer: if this process holds the converge duty, converge every
        tenant that is due and refresh silent calendars; publish the health gauges."""
        if self.duties is None or await self.duties.confirm(CONVERGE) is not None:
            await self._converge_due()
            if self.duties is not None:
                self.duties.ran(CONVERGE)
        else:
            self._next_due = None
        if time.monotonic() - self._published >= _PUBLISH_EVERY_S:
            await self.health()

    async def _converge_due(self) -> None:
        mono = time.monotonic()
        now = self._clock.now()
        times = await self._state.converge_times()
        requested = {
            tenant for tenant, at in times.items() if at.due_at is not None and at.due_at <= now
        }
        pending = [at.due_at for at in times.values() if at.due_at is not None and at.due_at > now]
        self._next_due = min(pending, default=None)

        def since_last(tenant: str) -> float:
            last = times[tenant].last_at if tenant in times else None
            return inf if last is None else (now - last).total_seconds()

        timed: set[str] = set()
        every = self.settings.reconverge_every_s
        tenants, moved = await self._tenant_ids()
        requested |= moved  # a tenant whose way in moved converges at once
        for tenant in tenants:
            if since_last(tenant) >= every:
                timed.add(tenant)
        renew_before = now + dt.timedelta(seconds=self.settings.renew_within_s)
        react = self.settings.react_min_interval_s
        for tenant in await self.subscriptions.tenants_needing_action(expiring_before=renew_before):
            if since_last(tenant) >= react:
                timed.add(tenant)
        # A failed mailbox, or a tenant whose whole call failed, is retried once its backoff
        # runs out.
        for key, backoff in list(self._backoff.items()):
            if backoff.retry_at <= mono:
                timed.add(key.split("/", 1)[0])
        # A room change converges at once; timed work waits for a failed tenant's backoff.
        due = requested | {tenant for tenant in timed if self._ready(tenant, mono)}
        for tenant in sorted(due):
            # Converges may take long: each starts only while the lease still holds.
            if self.duties is not None and await self.duties.confirm(CONVERGE) is None:
                return
            await self.converge(tenant)
        await self._refresh_silent(mono)

    def _ready(self, tenant_id: str, mono: float) -> bool:
        backoff = self._backoff.get(tenant_id)
        return backoff is None or backoff.retry_at <= mono

    async def _refresh_silent(self, mono: float) -> None:
        due: dict[tuple[str, str], dt.datetime] = {}
        for key in self.silence.silent():
            if mono - self._silent_refreshed.get(key, -inf) >= (self.settings.silent_resync_s):
                due[key] = self._clock.now()
                self._silent_refreshed[key] = mono
        if due:
            lease = None if self.duties is None else await self.duties.confirm(CONVERGE)
            if self.duties is None or lease is not None:
                await self._queue.enqueue(due, fence=lease)

    # --- converging ----------------------------------------------------------------------------
    def notification_urls(
        self, tenant_id: str, *, mode: NotificationMode, connector_url: str
    ) -> tuple[str, str]:
        if mode is NotificationMode.RELAY:
            base = connector_url.rstrip("/")
            return f"{base}/graph/notifications", f"{base}/graph/lifecycle"
        return (
            f"{self._base_url}/graph/notifications/{tenant_id}",
            f"{self._base_url}/graph/lifecycle/{tenant_id}",
        )

    async def client_state(self, tenant_id: str) -> str:
        """The tenant's current clientState, made on first use."""
        current = await self.subscriptions.current_client_state(tenant_id)
        if current is None:
            await self.subscriptions.rotate_client_state(
                tenant_id, _new_client_state(), grace=self._grace()
            )
            current = await self.subscriptions.current_client_state(tenant_id)
            assert current is not None
        return current

    async def rotate_client_state(self, tenant_id: str) -> ConvergeResult:
        """A new clientState becomes current (the previous one keeps verifying for the grace
        period) and the subscriptions are converged to it."""
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            # Under the tenant's lock: a timed converge of this process can neither start
            # between the rotation and this converge (and answer for it) nor overlap it.
            await self.subscriptions.rotate_client_state(
                tenant_id, _new_client_state(), grace=self._grace()
            )
            return await self._converge_locked(tenant_id)

    def _grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.client_state_grace_s)

    async def desired_mailboxes(self, tenant_id: str) -> list[str]:
        """The tenant's linked calendars, each once (mailboxes compare without case)."""
        wanted: dict[str, str] = {}
        for room in await self._store.list_rooms(tenant_id):
            wanted.setdefault(room.mailbox.casefold(), room.mailbox)
        return sorted(wanted.values())

    async def converge(self, tenant_id: str) -> ConvergeResult:
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            return await self._converge_locked(tenant_id)

    async def _converge_locked(self, tenant_id: str) -> ConvergeResult:
        try:
            await self._state.converged(tenant_id, self._clock.now())
            return await self._converge(tenant_id)
        except NotFound:
            self._forget(tenant_id)
            return ConvergeResult(tenant_id, error="tenant not found")

    async def _converge(self, tenant_id: str) -> ConvergeResult:
        tenant = await self._store.get_tenant(tenant_id)
        self._ways_in[tenant_id] = _way_in(tenant)
        wanted = await self.desired_mailboxes(tenant_id)
        if not tenant.connector_url:
            # Nothing to converge through: the customer makes the subscriptions itself and
            # registers them (orchestration.registration). Those it registered are kept as
            # they are; the calendars without one say why they have none.
            error = CONNECTOR_NOT_CONFIGURED
            for mailbox in await self.subscriptions.drop_unwanted(tenant_id, wanted):
                await self.silence.forget(tenant_id, mailbox)
            known = await self.subscriptions.subscription_ids(tenant_id)
            unregistered = [mailbox for mailbox in wanted if not known.get(mailbox)]
            if unregistered:
                await self.subscriptions.fail(tenant_id, unregistered, error)
            return ConvergeResult(tenant_id, error=error)
        secrets = await self._store.signing_secrets(tenant_id)
        state = await self.client_state(tenant_id)
        notification_url, lifecycle_url = self.notification_urls(
            tenant_id, mode=tenant.way_in, connector_url=tenant.connector_url
        )
        call = functools.partial(
            self._connector.put_subscriptions,
            tenant.connector_url,
            secrets=secrets,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=state,
            staleness_bound_s=tenant.staleness_bound_s,
        )
        try:
            await self._subscribe_in_parts(tenant_id, wanted, call)
            # The lifecycle marks this call answers. Graph asked to reauthorize the ``renew``
            # ones: the connector renews them whatever their expiry. Only these marks are
            # settled when it answers; one stored while it is out waits for the next converge.
            marks = await self.subscriptions.marks(tenant_id)
            renew_now = [m for m in wanted if m in marks and marks[m].action == RENEW]
            rows = await call(mailboxes=wanted, renew_now=renew_now)
        except BookingCacheError as exc:
            retry_after = exc.retry_after_s if isinstance(exc, Throttled) else None
            self._fail(tenant_id, retry_after_s=retry_after)
            log.warning("subscription converge of %s failed: %s", tenant_id, exc)
            # Tenants see the class of the failure, never what the connector sent.
            error = public_error(exc)
            if wanted:
                await self.subscriptions.fail(tenant_id, wanted, error)
            return ConvergeResult(tenant_id, error=error)
        self._backoff.pop(tenant_id, None)
        kept = await self._record(tenant_id, rows, wanted, answered=marks)
        for mailbox in await self.subscriptions.drop_unwanted(tenant_id, wanted):
            await self.silence.forget(tenant_id, mailbox)
        for mailbox in set(self._mailboxes_in_backoff(tenant_id)) - set(wanted):
            self._backoff.pop(f"{tenant_id}/{mailbox}", None)
        result = ConvergeResult(tenant_id, rows=kept)
        if result.failed:
            # The connector's own words stay in the log, shortened (tenants see the class).
            wanted_folded = {m.casefold() for m in wanted}
            log.warning(
                "subscriptions failed for %s: %s",
                tenant_id,
                "; ".join(
                    f"{row.mailbox}: {(row.error or 'no reason given')[:200]}"
                    for row in rows
                    if row.failed and row.mailbox.casefold() in wanted_folded
                ),
            )
        return result

    async def _subscribe_in_parts(
        self,
        tenant_id: str,
        wanted: Sequence[str],
        call: Callable[..., Awaitable[list[ConvergedSubscription]]],
    ) -> None:
        """When more calendars than one part have no subscription yet (a tenant onboarded),
        subscribe them part by part (``PATCH``) before the whole set's call. Each call then
        stays within one window of Graph's subscription-write budget, so it neither runs for
        minutes (a connector hosted as an Azure Function is cut after about 230 s) nor holds
        back the rest: each part shows as subscribed, and gets its first read, when its call
        returns. A connector that only converges whole sets (404 or 405) gets the one call."""
        known = await self.subscriptions.subscription_ids(tenant_id)
        missing = [mailbox for mailbox in wanted if not known.get(mailbox)]
        if len(missing) <= SUBSCRIBE_PART:
            return
        for first in range(0, len(missing), SUBSCRIBE_PART):
            part = missing[first : first + SUBSCRIBE_PART]
            try:
                rows = await call(mailboxes=part, partial=True)
            except UpstreamError as exc:
                if exc.status not in (404, 405):
                    raise
                log.info("the connector of %s converges whole sets only", tenant_id)
                return
            # Marks are settled by the whole set's call, which reads them.
            await self._record(tenant_id, rows, part, answered={})
            log.info(
                "subscribed %d of %d new calendars of %s",
                min(first + SUBSCRIBE_PART, len(missing)),
                len(missing),
                tenant_id,
            )

    async def _record(
        self,
        tenant_id: str,
        rows: Sequence[ConvergedSubscription],
        mailboxes: Sequence[str],
        *,
        answered: Mapping[str, Mark],
    ) -> list[ConvergedSubscription]:
        """Store the connector's rows of ``mailboxes`` (in their spelling), back off the
        mailboxes that failed, and refresh the calendars whose subscription is new."""
        folded = {m.casefold(): m for m in mailboxes}
        kept = [
            dataclasses.replace(
                row,
                mailbox=folded[row.mailbox.casefold()],
                error=SUBSCRIPTION_FAILED if row.failed else None,
            )
            for row in rows
            if row.mailbox.casefold() in folded
        ]
        known = await self.subscriptions.subscription_ids(tenant_id)
        await self.subscriptions.save(tenant_id, kept, answered=answered)
        for row in kept:
            if row.failed:
                self._fail(f"{tenant_id}/{row.mailbox}")
            else:
                self._backoff.pop(f"{tenant_id}/{row.mailbox}", None)
        await self._refresh_new(tenant_id, kept, known=known)
        return kept

    async def _refresh_new(
        self, tenant_id: str, rows: Sequence[ConvergedSubscription], *, known: dict[str, str | None]
    ) -> None:
        """Refresh each calendar whose subscription is new to the service: notifications may
        have gone unheard (between an old subscription and its replacement, or while the
        service did not know the id). The read must begin after the subscription was made, so
        a refresh already queued (the sweep's first read of a new room) is pulled in to now,
        and one that runs is followed by another."""
        new = [
            (tenant_id, row.mailbox)
            for row in rows
            if not row.failed
            and (row.status in NEW or known.get(row.mailbox) != row.subscription_id)
        ]
        if new:
            await self._queue.request_refresh(new, due=self._clock.now())

    def _mailboxes_in_backoff(self, tenant_id: str) -> list[str]:
        prefix = f"{tenant_id}/"
        return [key[len(prefix) :] for key in self._backoff if key.startswith(prefix)]

    def _fail(self, key: str, *, retry_after_s: float | None = None) -> None:
        backoff = self._backoff.setdefault(key, _Backoff())
        backoff.failures += 1
        delay = min(
            self.settings.backoff_max_s,
            self.settings.backoff_base_s * 2 ** (backoff.failures - 1),
        )
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        backoff.retry_at = time.monotonic() + delay

    def _forget(self, tenant_id: str) -> None:
        self._ways_in.pop(tenant_id, None)
        self._backoff.pop(tenant_id, None)
        for mailbox in self._mailboxes_in_backoff(tenant_id):
            self._backoff.pop(f"{tenant_id}/{mailbox}", None)

    # --- health --------------------------------------------------------------------------------
    async def health(self, tenant_id: str | None = None) -> list[CalendarHealth]:
        now = self._clock.now()
        within = dt.timedelta(seconds=self.settings.expiring_within_s)
        records = await self.subscriptions.calendars(tenant_id)
        await self.silence.load()
        for record in records:
            await self.silence.notified(
                record.tenant_id, record.mailbox, record.last_notification_at
            )
        report = [
            judge(record, now=now, expiring_within=within, silence=self.silence)
            for record in records
        ]
        if tenant_id is None:
            self.metrics.publish(report)
            cutoffs = fresh_since(await self._store.list_tenants(), now=now)
            self.metrics.publish_progress((await self.subscriptions.progress(cutoffs)).values())
            self.metrics.converges.set(sum(1 for key in self._backoff if "/" not in key))
            self._published = time.monotonic()
        return report


def _way_in(tenant: Tenant) -> tuple[str, str | None]:
    """What a tenant's notification URLs follow from."""
    return tenant.way_in.value, tenant.connector_url


def _new_client_state() -> str:
    return secrets.token_urlsafe(48)  # 64 characters, under Graph's 128


async def _logged(request: Coroutine[object, object, None]) -> None:
    try:
        await request
    except Exception:  # a lost request is made again by the timers (reconverge, sweep)
        log.exception("could not record a converge request")
