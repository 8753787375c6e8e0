"""The life of a subscription once created: the registry of live subscriptions (which is also
the state's ``ChangeSink``, turning calendar changes into change notifications), expiry, and the
lifecycle notifications sent to a subscription's ``lifecycleNotificationUrl``:

* ``reauthorizationRequired`` ahead of expiry. Graph's cadence is only illustrative (about a
  quarter of the remaining life, halving under three hours, every 15 minutes in the last hour);
  here the first one goes out ``reauthorization_lead_s`` before expiry, the next after half the
  remaining time, and at most every ``reauthorization_min_interval_s`` in the last hour.
  Reauthorizing or renewing restarts the cadence.
* ``subscriptionRemoved`` when the subscription is removed behind the app's back (control API).
* ``missed`` when change notifications for the subscription were dropped; several drops within
  ``missed_coalesce_s`` produce one event.

Subscriptions without a lifecycle URL get nothing, as at Graph.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from graph_emulator.changes import ChangeType
from graph_emulator.counters import Counters
from graph_emulator.delivery import DeliveryEngine, Outgoing
from graph_emulator.errors import GraphError
from graph_emulator.faults import FaultRegistry

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState

log = logging.getLogger(__name__)

LifecycleEvent = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]
LIFECYCLE_EVENTS: tuple[LifecycleEvent, ...] = (
    "reauthorizationRequired",
    "subscriptionRemoved",
    "missed",
)


@dataclass
class LifecycleSettings:
    reauthorization_lead_s: float = 3 * 3600.0
    reauthorization_min_interval_s: float = 15 * 60.0
    missed_coalesce_s: float = 60.0


@dataclass
class Subscription:
    id: str
    resource: str
    mailbox_id: str
    change_types: frozenset[str]
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: dt.datetime
    application_id: str
    tenant_id: str
    latest_tls: str = "v1_2"
    next_reauthorization: dt.datetime | None = None
    last_missed: dt.datetime | None = None
    last_reauthorized: dt.datetime | None = None

    def to_graph(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time(self.expiration),
            "creatorId": self.application_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": self.latest_tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


def graph_time(value: dt.datetime) -> str:
    """Graph's entity format: UTC with ``Z`` and 7 fractional digits when there is a fraction."""
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}0"
    return text + "Z"


def notification_time(value: dt.datetime) -> str:
    """Graph's format for ``subscriptionExpirationDateTime`` in notifications."""
    return value.astimezone(dt.UTC).isoformat()


class LifecycleNotifier:
    def __init__(
        self,
        *,
        engine: DeliveryEngine,
        counters: Counters,
        settings: LifecycleSettings | None = None,
    ) -> None:
        self.engine = engine
        self.counters = counters
        self.settings = settings or LifecycleSettings()

    def send(self, target: Subscription, event: LifecycleEvent) -> bool:
        if target.lifecycle_url is None:
            return False
        body = {
            "subscriptionId": target.id,
            "subscriptionExpirationDateTime": notification_time(target.expiration),
            "tenantId": target.tenant_id,
            "clientState": target.client_state,
            "lifecycleEvent": event,
        }
        self.engine.submit(
            target.lifecycle_url, Outgoing(body=body, subscription_id=target.id), lifecycle=True
        )
        self.counters.incr(f"lifecycle_{event}")
        return True

    def missed(self, target: Subscription, now: dt.datetime) -> None:
        last = target.last_missed
        window = dt.timedelta(seconds=self.settings.missed_coalesce_s)
        if last is not None and now - last < window:
            return
        target.last_missed = now
        self.send(target, "missed")

    def schedule_first(self, target: Subscription, now: dt.datetime) -> None:
        """(Re)start the reauthorization cadence after create, renew or reauthorize."""
        lead = dt.timedelta(seconds=self.settings.reauthorization_lead_s)
        floor = now + dt.timedelta(seconds=self.settings.reauthorization_min_interval_s)
        target.next_reauthorization = max(target.expiration - lead, floor)

    def due_reauthorization(self, target: Subscription, now: dt.datetime) -> bool:
        """Send ``reauthorizationRequired`` if it is due; plan the next one."""
        due = target.next_reauthorization
        if due is None or now < due or now >= target.expiration:
            return False
        remaining = (target.expiration - now).total_seconds()
        minimum = self.settings.reauthorization_min_interval_s
        interval = remaining / 2 if remaining > 3600.0 else minimum
        target.next_reauthorization = now + dt.timedelta(seconds=max(interval, minimum))
        self.send(target, "reauthorizationRequired")
        return True


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SubscriptionHub:
    """The registry of live subscriptions and the state's ``ChangeSink``."""

    def __init__(
        self,
        *,
        state: EmulatorState,
        engine: DeliveryEngine,
        lifecycle: LifecycleNotifier,
        faults: FaultRegistry,
    ) -> None:
        self.state = state
        self.engine = engine
        self.lifecycle = lifecycle
        self.faults = faults
        self.by_id: dict[str, Subscription] = {}
        self.by_mailbox: dict[str, dict[str, Subscription]] = {}
        self.sweep_interval_s = 30.0
        self._sweeper: asyncio.Task[None] | None = None
        self._etag_seq = 0
        self._etags: dict[tuple[str, str], str] = {}

    # -- registry -------------------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        self.by_id[sub.id] = sub
        self.by_mailbox.setdefault(sub.mailbox_id, {})[sub.id] = sub
        self.lifecycle.schedule_first(sub, self.state.clock.now())

    def discard(self, sub_id: str) -> Subscription | None:
        sub = self.by_id.pop(sub_id, None)
        if sub is not None:
            self.by_mailbox.get(sub.mailbox_id, {}).pop(sub_id, None)
            self.faults.unsilence(sub_id)
        return sub

    def live(self, sub_id: str) -> Subscription | None:
        """The subscription if it exists and has not expired (an expired one vanishes now)."""
        sub = self.by_id.get(sub_id)
        if sub is not None and sub.expiration <= self.state.clock.now():
            self.discard(sub_id)
            self.state.counters.incr("subscriptions_expired")
            return None
        return sub

    def for_app(self, app_id: str) -> list[Subscription]:
        now = self.state.clock.now()
        return [s for s in self.by_id.values() if s.application_id == app_id and s.expiration > now]

    def count_for_mailbox(self, mailbox_id: str) -> int:
        now = self.state.clock.now()
        return sum(1 for s in self.by_mailbox.get(mailbox_id, {}).values() if s.expiration > now)

    def remove(self, sub_id: str) -> Subscription | None:
        """Graph removes a subscription on its own: ``subscriptionRemoved`` follows."""
        sub = self.discard(sub_id)
        if sub is not None:
            self.lifecycle.send(sub, "subscriptionRemoved")
            self.state.counters.incr("subscriptions_removed")
        return sub

    # -- ChangeSink -----------------------------------------------------------------------------

    def event_changed(self, *, mailbox_id: str, event_id: str, change_type: ChangeType) -> None:
        subs = self.by_mailbox.get(mailbox_id)
        if not subs:
            return
        now = self.state.clock.now()
        etag: str | None = None
        for sub in list(subs.values()):
            if sub.expiration <= now or change_type not in sub.change_types:
                continue
            if etag is None:
                etag = self._etag(mailbox_id, event_id)
            resource = f"Users/{mailbox_id}/Events/{event_id}"
            body = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": notification_time(sub.expiration),
                "changeType": change_type,
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "@odata.id": resource,
                    "@odata.etag": etag,
                    "id": event_id,
                },
                "clientState": sub.client_state,
                "tenantId": sub.tenant_id,
            }
            self.engine.submit(sub.notification_url, Outgoing(body=body, subscription_id=sub.id))

    def _etag(self, mailbox_id: str, event_id: str) -> str:
        """The event's etag; the notifications of one write (a burst) share one lookup."""
        key = (mailbox_id, event_id)
        cached = self._etags.get(key)
        if cached is not None:
            return cached
        if not self._etags and _loop_running():
            asyncio.get_running_loop().call_soon(self._etags.clear)
        change_key = ""
        mailbox = self.state.directory.find(mailbox_id)
        if mailbox is not None:
            try:
                change_key = self.state.calendars.find(mailbox, event_id).change_key
            except GraphError:
                change_key = ""  # deleted; Graph still sends an etag of the last version
        if not change_key:
            self._etag_seq += 1
            change_key = f"DwAAABYAAAD{self._etag_seq:012d}"
        etag = f'W/"{change_key}"'
        if self._etags or _loop_running():
            self._etags[key] = etag
        return etag

    def dropped(self, subscription_ids: Iterable[str]) -> None:
        now = self.state.clock.now()
        for sid in subscription_ids:
            sub = self.by_id.get(sid)
            if sub is not None:
                self.lifecycle.missed(sub, now)

    # -- background sweep -----------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire subscriptions past their time and send due ``reauthorizationRequired``."""
        now = self.state.clock.now()
        for sub in list(self.by_id.values()):
            if sub.expiration <= now:
                self.discard(sub.id)
                self.state.counters.incr("subscriptions_expired")
            else:
                self.lifecycle.due_reauthorization(sub, now)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # a sweep must never stop the loop
                log.exception("subscription sweep failed")
            await self.state.clock.sleep(self.sweep_interval_s)

    async def start(self) -> None:
        await self.engine.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.engine.stop()
        await self.engine.client.aclose()
