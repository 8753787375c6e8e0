"""Converging Graph's subscriptions to the desired set of mailboxes.

One pass: list this app's subscriptions, then per wanted mailbox create / renew / recreate /
adopt / leave alone, and delete the subscriptions that point at our notification URL for
mailboxes no longer wanted. Running it twice in a row changes nothing the second time.

A partial pass (``PATCH /v1/subscriptions``) does the same for the mailboxes it names and
leaves every other subscription alone: the service onboards a large set in parts, each within
Graph's subscription-write budget of 20 s, so that no call runs long and the rooms show as
subscribed part by part. The desired set it keeps for the renewal timer gains the named
mailboxes.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote

from .clock import Clock, parse_instant, to_graph_utc
from .errors import BadRequest, GraphError
from .graph import GraphClient
from .metrics import Metrics
from .ratelimit import SlidingWindow
from .store import StateStore

CHANGE_TYPES = "created,updated,deleted"
RESOURCE = re.compile(r"^/?users/(?P<mailbox>[^/]+)/events$", re.IGNORECASE)
MAX_CLIENT_STATE = 128
# The most a tenant's staleness bound may be (the service's own limit is lower).
MAX_STALENESS_BOUND_S = 30 * 86_400
PARALLEL_MAILBOXES = 8


@dataclass(frozen=True)
class Desired:
    mailboxes: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str
    # Mailboxes (lower case) whose subscription is renewed in this pass whatever its expiry:
    # Graph asked for reauthorization. A one-off request, so not part of the stored set.
    renew_now: frozenset[str] = frozenset()
    # The tenant's staleness bound at the service, in seconds: how old a room's pushed window
    # may grow before the map shows it as unknown (the push reconciliation keeps within it).
    staleness_bound_s: float | None = None

    @classmethod
    def from_json(cls, body: Any) -> Desired:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        mailboxes = body.get("mailboxes")
        if not isinstance(mailboxes, list) or not all(
            isinstance(m, str) and "@" in m for m in mailboxes
        ):
            raise BadRequest("mailboxes must be a list of mailbox addresses")
        url, lifecycle = body.get("notificationUrl"), body.get("lifecycleNotificationUrl")
        state = body.get("clientState")
        # Graph itself insists on https; plain http is passed on for local emulators.
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise BadRequest("notificationUrl must be an https URL")
        if lifecycle is not None and (
            not isinstance(lifecycle, str) or not lifecycle.startswith(("https://", "http://"))
        ):
            raise BadRequest("lifecycleNotificationUrl must be an https URL or null")
        if not isinstance(state, str) or not 0 < len(state) <= MAX_CLIENT_STATE:
            raise BadRequest(f"clientState must be 1..{MAX_CLIENT_STATE} characters")
        unique: dict[str, str] = {}
        for mailbox in mailboxes:
            unique.setdefault(mailbox.strip().lower(), mailbox.strip())
        renew_now = body.get("renewNow", [])
        if not isinstance(renew_now, list) or not all(
            isinstance(m, str) and m.strip().lower() in unique for m in renew_now
        ):
            raise BadRequest("renewNow must be a list of mailboxes from mailboxes")
        staleness = body.get("stalenessBoundS")
        if staleness is not None and (
            isinstance(staleness, bool)
            or not isinstance(staleness, int | float)
            or not 0 < staleness <= MAX_STALENESS_BOUND_S
        ):
            raise BadRequest(
                f"stalenessBoundS must be a number of seconds in (0, {MAX_STALENESS_BOUND_S}]"
            )
        return cls(
            tuple(unique.values()),
            url,
            lifecycle,
            state,
            frozenset(m.strip().lower() for m in renew_now),
            None if staleness is None else float(staleness),
        )

    def including(self, saved: dict[str, Any] | None) -> Desired:
        """This desired set with the mailboxes of ``saved`` (a stored set) added, for a partial
        pass: the URLs and clientState are this set's."""
        if saved is None:
            return self
        try:
            earlier = Desired.from_json(saved)
        except BadRequest:
            return self
        unique = {m.lower(): m for m in earlier.mailboxes}
        unique.update((m.lower(), m) for m in self.mailboxes)
        return Desired(
            tuple(unique.values()),
            self.notification_url,
            self.lifecycle_url,
            self.client_state,
            staleness_bound_s=self.staleness_bound_s
            if self.staleness_bound_s is not None
            else earlier.staleness_bound_s,
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mailboxes": list(self.mailboxes),
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "clientState": self.client_state,
        }
        if self.staleness_bound_s is not None:
            body["stalenessBoundS"] = self.staleness_bound_s
        return body


def mailbox_of(subscription: dict[str, Any]) -> str | None:
    match = RESOURCE.match(str(subscription.get("resource", "")))
    return unquote(match.group("mailbox")) if match else None


def registration(
    subscriptions: list[dict[str, Any]], *, notification_url: str, client_state: str
) -> dict[str, Any]:
    """What the service needs to know of the subscriptions made for ``notification_url``
    (``POST /v1/tenants/{tenant}/subscriptions:register``): each one's id, mailbox and expiry,
    and the client state they carry (Graph does not show it, so the caller gives it)."""
    registered = [
        {"id": sub["id"], "mailbox": mailbox, "expirationDateTime": sub["expirationDateTime"]}
        for sub in subscriptions
        if sub.get("notificationUrl") == notification_url
        and isinstance(sub.get("id"), str)
        and isinstance(sub.get("expirationDateTime"), str)
        and (mailbox := mailbox_of(sub)) is not None
    ]
    return {"clientState": client_state, "subscriptions": registered}


def row(
    mailbox: str, sub: dict[str, Any] | None, status: str, error: str | None = None
) -> dict[str, Any]:
    return {
        "mailbox": mailbox,
        "subscriptionId": sub.get("id") if sub else None,
        "expirationDateTime": sub.get("expirationDateTime") if sub else None,
        "status": status,
        "error": error,
    }


def readable(exc: GraphError, mailbox: str) -> str:
    if exc.status == 403:
        return (
            f"Graph refused access to {mailbox} (403 {exc.code}: {exc.message}). Is the mailbox "
            "inside the app's RBAC management scope, and is Calendars.Read granted?"
        )
    return f"Graph answered {exc.status} {exc.code}: {exc.message}"


class SubscriptionManager:
    def __init__(
        self,
        *,
        graph: GraphClient,
        store: StateStore,
        clock: Clock,
        expiration_minutes: int = 10_070,
        renew_below_hours: int = 48,
        writes: SlidingWindow | None = None,
        listing: SlidingWindow | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._graph = graph
        self._metrics = metrics or Metrics()
        self._store = store
        self._clock = clock
        self._lifetime = timedelta(minutes=expiration_minutes)
        self._renew_below = timedelta(hours=renew_below_hours)
        self._writes = writes or SlidingWindow(500, 20, clock)
        self._listing = listing or SlidingWindow(25, 20, clock)

    async def list_all(self) -> list[dict[str, Any]]:
        subscriptions = await self._graph.list_subscriptions(quota=self._listing)
        for sub in subscriptions:
            mailbox = mailbox_of(sub)
            if mailbox and isinstance(sub.get("id"), str):
                self._store.remember_subscription(sub["id"], mailbox, sub.get("clientState"))
        return subscriptions

    def _expiry(self) -> str:
        return to_graph_utc(self._clock.now() + self._lifetime)

    def _needs_renewal(self, sub: dict[str, Any]) -> bool:
        try:
            expires = parse_instant(str(sub.get("expirationDateTime")))
        except ValueError:
            return True
        return expires - self._clock.now() < self._renew_below

    async def converge(self, desired: Desired, *, prune: bool = True) -> list[dict[str, Any]]:
        """Converge to ``desired``; with ``prune`` false (a partial pass) the subscriptions of
        mailboxes it does not name are left as they are."""
        if prune:
            self._store.save_desired(desired.to_json())
        else:
            self._store.save_desired(desired.including(self._store.load_desired()).to_json())
        existing = await self.list_all()
        by_mailbox: dict[str, dict[str, Any]] = {}
        for sub in existing:
            mailbox = mailbox_of(sub)
            if mailbox is None:
                continue
            current = by_mailbox.get(mailbox.lower())
            # Prefer the one already pointing where we want, if the app somehow has several.
            if current is None or sub.get("notificationUrl") == desired.notification_url:
                by_mailbox[mailbox.lower()] = sub
        gate = asyncio.Semaphore(PARALLEL_MAILBOXES)

        async def one(mailbox: str) -> dict[str, Any]:
            async with gate:
                return await self._converge_one(mailbox, by_mailbox.get(mailbox.lower()), desired)

        rows = list(await asyncio.gather(*(one(m) for m in desired.mailboxes)))
        if not prune:
            return self._counted(rows)
        wanted = {m.lower() for m in desired.mailboxes}
        extras = [
            sub
            for key, sub in by_mailbox.items()
            if key not in wanted and sub.get("notificationUrl") == desired.notification_url
        ]
        for sub in extras:
            rows.append(await self._delete_row(sub))
        return self._counted(rows)

    def _counted(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            self._metrics.inc("subscription_outcomes", str(r["status"]))
        return rows

    async def _converge_one(
        self, mailbox: str, current: dict[str, Any] | None, desired: Desired
    ) -> dict[str, Any]:
        try:
            if current is None:
                try:
                    return row(mailbox, await self._create(mailbox, desired), "created")
                except GraphError as exc:
                    if exc.status != 409:
                        raise
                    conflict = exc
                adopted = await self._find(mailbox)
                if adopted is None:
                    raise conflict
                _, sub = await self._align(mailbox, adopted, desired)
                return row(mailbox, sub, "adopted")
            status, sub = await self._align(mailbox, current, desired)
            return row(mailbox, sub, status)
        except GraphError as exc:
            return row(mailbox, None, "failed", readable(exc, mailbox))

    async def _align(
        self, mailbox: str, sub: dict[str, Any], desired: Desired
    ) -> tuple[str, dict[str, Any]]:
        """Bring one existing subscription to the wanted URLs, clientState and expiry."""
        state = sub.get("clientState")
        if sub.get("lifecycleNotificationUrl") != desired.lifecycle_url or (
            state is not None and state != desired.client_state
        ):
            # Neither the lifecycle URL nor the clientState can be PATCHed.
            await self._delete(sub, mailbox)
            return "recreated", await self._create(mailbox, desired)
        patch: dict[str, Any] = {}
        if sub.get("notificationUrl") != desired.notification_url:
            patch["notificationUrl"] = desired.notification_url
        if patch or self._needs_renewal(sub) or mailbox.lower() in desired.renew_now:
            patch["expirationDateTime"] = self._expiry()
            try:
                updated = await self._graph.update_subscription(
                    str(sub["id"]), patch, mailbox=mailbox, quota=self._writes
                )
            except GraphError as exc:
                if exc.status != 404:
                    raise
                self._store.forget_subscription(str(sub["id"]))
                return "recreated", await self._create(mailbox, desired)
            self._store.remember_subscription(str(sub["id"]), mailbox, desired.client_state)
            return "renewed", {**sub, **updated}
        self._store.remember_subscription(str(sub["id"]), mailbox, desired.client_state)
        return "unchanged", sub

    async def _create(self, mailbox: str, desired: Desired) -> dict[str, Any]:
        body: dict[str, Any] = {
            "changeType": CHANGE_TYPES,
            "notificationUrl": desired.notification_url,
            "resource": f"users/{quote(mailbox, safe='@')}/events",
            "expirationDateTime": self._expiry(),
            "clientState": desired.client_state,
            "latestSupportedTlsVersion": "v1_2",
        }
        if desired.lifecycle_url:
            body["lifecycleNotificationUrl"] = desired.lifecycle_url
        created = await self._graph.create_subscription(body, mailbox=mailbox, quota=self._writes)
        self._store.remember_subscription(str(created["id"]), mailbox, desired.client_state)
        return created

    async def _find(self, mailbox: str) -> dict[str, Any] | None:
        for sub in await self.list_all():
            found = mailbox_of(sub)
            if found and found.lower() == mailbox.lower():
                return sub
        return None

    async def _delete(self, sub: dict[str, Any], mailbox: str) -> None:
        try:
            await self._graph.delete_subscription(
                str(sub["id"]), mailbox=mailbox, quota=self._writes
            )
        except GraphError as exc:
            if exc.status != 404:
                raise
        self._store.forget_subscription(str(sub["id"]))

    async def _delete_row(self, sub: dict[str, Any]) -> dict[str, Any]:
        mailbox = mailbox_of(sub) or ""
        try:
            await self._delete(sub, mailbox)
        except GraphError as exc:
            return row(mailbox, sub, "failed", readable(exc, mailbox))
        return row(mailbox, sub, "deleted")

    async def renew(self, *, force: bool = False) -> list[dict[str, Any]]:
        """Renew this app's subscriptions that are close to expiry (all of them with ``force``)."""
        rows: list[dict[str, Any]] = []
        for sub in await self.list_all():
            mailbox = mailbox_of(sub) or ""
            if not force and not self._needs_renewal(sub):
                rows.append(row(mailbox, sub, "unchanged"))
                continue
            try:
                updated = await self._graph.update_subscription(
                    str(sub["id"]),
                    {"expirationDateTime": self._expiry()},
                    mailbox=mailbox,
                    quota=self._writes,
                )
                rows.append(row(mailbox, {**sub, **updated}, "renewed"))
            except GraphError as exc:
                rows.append(row(mailbox, sub, "failed", readable(exc, mailbox)))
        return self._counted(rows)

    async def renew_one(self, subscription_id: str, mailbox: str) -> None:
        """PATCH one subscription's expiry (which also reauthorizes it)."""
        await self._graph.update_subscription(
            subscription_id,
            {"expirationDateTime": self._expiry()},
            mailbox=mailbox,
            quota=self._writes,
        )

    async def delete(self, mailboxes: set[str] | None = None) -> list[dict[str, Any]]:
        """Delete this app's subscriptions (only those of ``mailboxes`` when given)."""
        wanted = {m.lower() for m in mailboxes} if mailboxes is not None else None
        rows = []
        for sub in await self.list_all():
            mailbox = mailbox_of(sub) or ""
            if wanted is None or mailbox.lower() in wanted:
                rows.append(await self._delete_row(sub))
        return rows

    async def timer(self) -> list[dict[str, Any]]:
        """What the timer runs: re-converge the last desired set, or renew what exists."""
        saved = self._store.load_desired()
        if saved is not None:
            return await self.converge(Desired.from_json(saved))
        return await self.renew()
