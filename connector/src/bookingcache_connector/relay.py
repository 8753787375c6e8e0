"""Alternative 2: Graph posts to the connector, the connector tells the service.

Receiving is cheap and durable: the batch is parsed, each notification's clientState compared in
constant time, and the accepted ones committed to the SQLite inbox before Graph gets its 202.
Forwarding runs apart from receiving: it drains the inbox into one signed call to the service,
retries with exponential backoff and jitter, and once it has been failing for longer than
``resync_after_s`` it collapses the backlog into one ``resync`` per mailbox, delivered when the
service answers again. Nothing is deleted from the inbox before the service accepted it.

With pushed events (the tenant's ``push`` source) the service has nothing it could read, so the
connector is its safety net: ``reconcile`` queues a ``resync`` (which carries the calendar's
window) for every subscribed mailbox whose window comes due (``cadence``: within the long bound
while the subscriptions are listening, ``reconcile_s`` otherwise, each mailbox at its own
instant of the bound, or one bound after a push its change notification asked for), never-pushed
mailboxes first, at most ``reconcile_rate_per_s`` a second.
That pushes a newly subscribed calendar at once, keeps a quiet one from ageing into ``unknown``
at the service, and repairs a change notification Graph lost without a ``missed``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from . import cadence
from .clock import Clock
from .errors import BadRequest, ConnectorError, DeliveryError
from .events import MalformedEvent, TitlePolicy, basic_event
from .loops import Loops, LoopStatus, backoff_s
from .metrics import Metrics
from .service import ServiceClient
from .store import InboxItem, StateStore

log = logging.getLogger(__name__)

ReadWindow = Callable[[str, datetime, datetime], Awaitable[list[dict[str, Any]]]]
RefreshMap = Callable[[], Awaitable[None]]
Renew = Callable[[str, str], Awaitable[None]]
REAUTHORIZE_SPACING = timedelta(minutes=10)


def parse_batch(body: bytes, field: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body is not JSON") from exc
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BadRequest('body must be {"value": [...]}')
    return [
        item
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("subscriptionId"), str)
        and isinstance(item.get(field), str)
    ]


def state_matches(given: Any, known: Iterable[str]) -> bool:
    """Compare against every known clientState without stopping early."""
    if not isinstance(given, str):
        return False
    offered = given.encode()
    matched = False
    for state in known:
        matched |= hmac.compare_digest(offered, state.encode())
    return matched


class Relay:
    def __init__(
        self,
        *,
        store: StateStore,
        clock: Clock,
        service: ServiceClient,
        client_states: Iterable[str] = (),
        refresh_map: RefreshMap | None = None,
        renew: Renew | None = None,
        read_window: ReadWindow | None = None,
        window_days: int = 14,
        titles: TitlePolicy = TitlePolicy.SEND,
        resync_after_s: float = 300.0,
        max_backoff_s: float = 60.0,
        reconcile_s: float = 900.0,
        reconcile_rate_per_s: float = 5.0,
        reconcile_healthy_s: float = 4 * 3600.0,
        rng: random.Random | None = None,
        loops: Loops | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._service = service
        self._configured_states = tuple(client_states)
        self._refresh_map = refresh_map
        self._renew = renew
        self._renewed_at: dict[str, datetime] = {}
        self._read_window = read_window
        self._window = timedelta(days=window_days)
        self._titles = titles
        self._resync_after = timedelta(seconds=resync_after_s)
        self._max_backoff = max_backoff_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._reconcile = timedelta(seconds=reconcile_s) if reconcile_s > 0 else None
        self.reconcile_rate_per_s = reconcile_rate_per_s
        self._reconcile_healthy_s = reconcile_healthy_s
        # Mailboxes ``reconcile`` queued a resync for, and when: not queued again within the
        # short bound while that resync waits or its window read failed.
        self._requested: dict[str, datetime] = {}
        # Mailboxes whose window a change notification had pushed, and when (this process's
        # own pushes: after a restart the grid holds until the next one).
        self._noticed: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._problem: Exception | None = None
        self._metrics = metrics or Metrics()
        loops = loops or Loops()
        self.status: LoopStatus = loops.get("relay")
        self._renewal: LoopStatus = loops.get("renewal")
        # Reconciliation runs inside the relay's loop, but fails on its own (Graph, the store).
        self.reconcile_status: LoopStatus | None = (
            loops.get("reconcile") if self.reconciles else None
        )

    @property
    def reconciles(self) -> bool:
        return self._read_window is not None and self._reconcile is not None

    # -- receiving (on Graph's clock: must answer within 3 s) --------------------------------

    def receive(self, kind: str, body: bytes) -> int:
        """Commit the authentic notifications of one Graph batch; returns how many."""
        field = "changeType" if kind == "change" else "lifecycleEvent"
        items = parse_batch(body, field)
        # A subscription this connector knows must carry its own clientState; others (created
        # elsewhere, not yet listed) any clientState the connector has been told about.
        per_subscription = self._store.client_states_of(item["subscriptionId"] for item in items)
        known: set[str] | None = None  # read only for a subscription not listed here
        accepted = []
        for item in items:
            expected = per_subscription.get(item["subscriptionId"])
            if expected is not None:
                allowed: Iterable[str] = [expected]
            else:
                if known is None:
                    known = set(self._configured_states) | self._store.client_states()
                allowed = known
            if state_matches(item.get("clientState"), allowed):
                accepted.append((kind, item["subscriptionId"], None, item[field]))
        if len(accepted) < len(items):
            log.warning(
                "ignored %d notification(s) with a wrong clientState", len(items) - len(accepted)
            )
        count = self._store.enqueue(accepted, self._clock.now()) if accepted else 0
        if count:
            self._wake.set()
        return count

    # -- forwarding --------------------------------------------------------------------------

    async def drain(self) -> float | None:
        """Try to deliver the backlog once. Returns None when the inbox is empty, otherwise the
        number of seconds to wait before the next attempt."""
        async with self._drain_lock:
            items = self._store.pending()
            if not items:
                return None
            # A Graph or token failure on the way (the map, a window) that did not stop the
            # delivery: the drain counts as a failure of the loop all the same.
            self._problem = None
            mailbox_of, fresh = await self._mailboxes(items)
            await self._reauthorize(items, mailbox_of)
            payload, handled = await self._payload(items, mailbox_of, drop_unknown=fresh)
            if any(payload[key] for key in ("changes", "lifecycle", "resync")):
                try:
                    await self._service.notify(payload)
                except DeliveryError as exc:
                    refused = exc.status is not None and 400 <= exc.status < 500
                    self._metrics.inc("relay_calls", "refused" if refused else "failed")
                    return self._failed(exc, mailbox_of)
                self._metrics.inc("relay_calls", "relayed")
                self._store.record_success()
                pushed = [window["mailbox"] for window in payload.get("windows", ())]
                if pushed:
                    at = self._clock.now()
                    self._store.record_pushed(pushed, at)
                    changed = {change["mailbox"] for change in payload["changes"]}
                    self._noticed.update((m, at) for m in pushed if m in changed)
            self._store.remove(handled)
            if self._problem is not None:
                self.status.failed(self._problem, self._clock.now())
            else:
                self.status.succeeded(self._clock.now())
            if not self._store.pending_count():
                return None
            return 0.0 if handled else self._max_backoff

    def reconcile(self, *, budget: int) -> int:
        """Queue a ``resync`` for up to ``budget`` subscribed mailboxes whose window is due
        (``reconcile_bound_s``; never pushed first, then the longest ago). Returns how many
        were queued; none unless events are pushed."""
        if not self.reconciles or budget < 1:
            return 0
        assert self._reconcile is not None
        now = self._clock.now()
        pushed = self._store.last_pushed()
        bound_s = self.reconcile_bound_s(now)
        never = datetime.min.replace(tzinfo=UTC)
        due = sorted(
            (pushed.get(mailbox, never), mailbox)
            for mailbox in set(self._store.subscription_map().values())
            if not self._waiting(mailbox, pushed.get(mailbox, never), now)
            and (
                mailbox not in pushed
                or cadence.due(
                    pushed[mailbox],
                    bound_s=bound_s,
                    at=cadence.phase(mailbox),
                    on_notice=self._noticed.get(mailbox) == pushed[mailbox],
                )
                <= now
            )
        )
        chosen = [mailbox for _, mailbox in due[:budget]]
        if chosen:
            self._store.enqueue([("resync", "", mailbox, "resync") for mailbox in chosen], now)
            self._requested.update(dict.fromkeys(chosen, now))
            self._wake.set()
        return len(chosen)

    def _waiting(self, mailbox: str, pushed_at: datetime, now: datetime) -> bool:
        """Whether a resync ``reconcile`` queued for ``mailbox`` is not delivered yet (it
        waits in the inbox, or its window read failed): not queued again within
        ``reconcile_s``."""
        assert self._reconcile is not None
        requested = self._requested.get(mailbox)
        return requested is not None and requested > pushed_at and now - requested < self._reconcile

    def reconcile_bound_s(self, now: datetime) -> float:
        """How long a pushed window may go unpushed now (``cadence``): the long bound while
        the subscriptions are listening (a change notification within it, and neither the
        relay nor the renewals failing), the short one (``reconcile_s``) otherwise."""
        assert self._reconcile is not None
        short_s = self._reconcile.total_seconds()
        long_s = cadence.long_bound_s(
            short_s=short_s,
            healthy_s=self._reconcile_healthy_s,
            staleness_s=self._store.staleness_bound_s(),
        )
        if long_s <= short_s:
            return short_s
        heard = self._store.heard_at()
        listening = (
            heard is not None
            and now - heard <= timedelta(seconds=long_s)
            and self._store.failing_since()[0] is None
            and not self._renewal.failing
        )
        return long_s if listening else short_s

    async def _reauthorize(self, items: list[InboxItem], mailbox_of: dict[str, str]) -> None:
        """Answer ``reauthorizationRequired`` ourselves: only the connector holds the Graph
        credentials, and delivery pauses until the subscription is renewed. A PATCH renews and
        reauthorizes; it is sent at most once per 10 minutes per subscription."""
        if self._renew is None:
            return
        now = self._clock.now()
        for item in items:
            sub_id = item.subscription_id
            mailbox = item.mailbox or mailbox_of.get(sub_id)
            if item.kind != "lifecycle" or item.value != "reauthorizationRequired" or not mailbox:
                continue
            last = self._renewed_at.get(sub_id)
            if last is not None and now - last < REAUTHORIZE_SPACING:
                continue
            self._renewed_at[sub_id] = now
            try:
                await self._renew(sub_id, mailbox)
            except ConnectorError as exc:
                log.warning("could not renew subscription %s of %s: %s", sub_id, mailbox, exc)

    def _failed(self, exc: DeliveryError, mailbox_of: dict[str, str]) -> float:
        now = self._clock.now()
        self._store.record_failure(now)
        since, attempts = self._store.failing_since()
        if since is not None and now - since >= self._resync_after:
            self._store.collapse_to_resync(mailbox_of, now)
        backoff = min(self._max_backoff, 0.5 * 2.0 ** min(attempts, 16))
        delay = backoff * (0.5 + self._rng.random() / 2)
        self.status.failed(exc, now, retry_in_s=delay)
        return delay

    async def _mailboxes(self, items: list[InboxItem]) -> tuple[dict[str, str], bool]:
        """The subscription map, refreshed from Graph when an item names an unknown id.
        The flag says whether the map is fresh, i.e. an id still unknown is not ours."""
        mailbox_of = self._store.subscription_map()
        unknown = {i.subscription_id for i in items if not i.mailbox} - mailbox_of.keys()
        if not unknown or self._refresh_map is None:
            return mailbox_of, False
        try:
            await self._refresh_map()
        except ConnectorError as exc:
            # The notifications of known subscriptions are still delivered.
            self._problem = self._problem or exc
            return mailbox_of, False
        return self._store.subscription_map(), True

    async def _payload(
        self, items: list[InboxItem], mailbox_of: dict[str, str], *, drop_unknown: bool
    ) -> tuple[dict[str, Any], list[int]]:
        changes: list[dict[str, str]] = []
        lifecycle: list[dict[str, str]] = []
        resync: list[str] = []
        seen: set[tuple[str, str, str]] = set()
        delivered: list[int] = []
        for item in items:
            mailbox = item.mailbox or mailbox_of.get(item.subscription_id)
            if mailbox is None:
                # Unknown even to a fresh listing: not this app's subscription. Otherwise keep
                # it until the map can be refreshed.
                if drop_unknown:
                    log.warning(
                        "dropping notification for unknown subscription %s", item.subscription_id
                    )
                    delivered.append(item.seq)
                continue
            delivered.append(item.seq)
            if item.kind == "resync":
                if mailbox not in resync:
                    resync.append(mailbox)
            elif item.kind == "lifecycle":
                lifecycle.append(
                    {
                        "mailbox": mailbox,
                        "subscriptionId": item.subscription_id,
                        "lifecycleEvent": item.value,
                    }
                )
            elif (key := (mailbox, item.subscription_id, item.value)) not in seen:
                seen.add(key)
                changes.append(
                    {
                        "mailbox": mailbox,
                        "subscriptionId": item.subscription_id,
                        "changeType": item.value,
                    }
                )
        payload: dict[str, Any] = {"changes": changes, "lifecycle": lifecycle, "resync": resync}
        if self._read_window is not None:
            payload["windows"] = await self._windows(changes, lifecycle, resync)
        return payload, delivered

    async def _windows(
        self, changes: list[dict[str, str]], lifecycle: list[dict[str, str]], resync: list[str]
    ) -> list[dict[str, Any]]:
        assert self._read_window is not None
        mailboxes = list(
            dict.fromkeys(
                [c["mailbox"] for c in changes]
                + resync
                + [
                    x["mailbox"]
                    for x in lifecycle
                    if x["lifecycleEvent"] != "reauthorizationRequired"
                ]
            )
        )
        today = self._clock.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start, end = today, today + self._window
        windows: list[dict[str, Any]] = []
        for mailbox in mailboxes:
            try:
                raw = await self._read_window(mailbox, start, end)
                events = [basic_event(e, self._titles).to_json() for e in raw]
            except (ConnectorError, MalformedEvent) as exc:
                log.info("could not read the window of %s: %s", mailbox, exc)
                self._problem = self._problem or exc
                if mailbox not in resync:
                    resync.append(mailbox)
                continue
            windows.append(
                {"mailbox": mailbox, "start": _z(start), "end": _z(end), "events": events}
            )
        return windows

    # -- background loop (ASGI lifespan / Functions worker) -----------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, idle_s: float = 30.0, reconcile_every_s: float = 1.0) -> None:
        """Drain forever; woken by new notifications, otherwise retried on the backoff. With
        pushed events, ``reconcile`` runs every ``reconcile_every_s`` too. No exception ends
        the loop: each is recorded in ``status`` and logged, and the next try waits a backoff
        that grows with the failures in a row."""
        budget = max(1, round(self.reconcile_rate_per_s * reconcile_every_s))
        next_reconcile = self._clock.now()
        self.status.start()
        if self.reconcile_status is not None:
            self.reconcile_status.start()
        try:
            while True:
                self._wake.clear()
                if self.reconciles and self._clock.now() >= next_reconcile:
                    next_reconcile = self._clock.now() + timedelta(seconds=reconcile_every_s)
                    self._reconcile_once(budget)
                try:
                    delay = await self.drain()
                except Exception as exc:  # noqa: BLE001 - the loop outlives every failure
                    delay = self._backoff(self.status.failures + 1)
                    self.status.failed(exc, self._clock.now(), retry_in_s=delay)
                if delay == 0.0:
                    continue
                if delay is not None:
                    await self._clock.sleep(delay)  # backing off: new arrivals wait too
                    continue
                wait_s = min(idle_s, reconcile_every_s) if self.reconciles else idle_s
                sleeper = asyncio.ensure_future(self._clock.sleep(wait_s))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
        finally:
            self.status.stop()
            if self.reconcile_status is not None:
                self.reconcile_status.stop()

    def _reconcile_once(self, budget: int) -> None:
        status = self.reconcile_status
        assert status is not None
        try:
            self.reconcile(budget=budget)
        except Exception as exc:  # noqa: BLE001 - retried on the next round
            status.failed(exc, self._clock.now())
        else:
            status.succeeded(self._clock.now())

    def _backoff(self, failures: int) -> float:
        return backoff_s(failures, base_s=0.5, cap_s=self._max_backoff, rng=self._rng)


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
