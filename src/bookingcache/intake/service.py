"""The intake as one object per service process: parses, verifies and classifies what the two
endpoints receive, and makes the accepted notifications durable through the inbox's group
commit before they are acknowledged."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bookingcache.clock import Clock
from bookingcache.contract.signing import NO_MATCH, SignatureVerifier
from bookingcache.domain.notifications import InboxItem
from bookingcache.domain.tenancy import EventSource, Tenant
from bookingcache.domain.titles import withhold_titles
from bookingcache.errors import BadSignature, NotFound, NotPersisted, UnsupportedMediaType
from bookingcache.intake import graph, relay
from bookingcache.intake.directory import IntakeDirectory
from bookingcache.intake.groupcommit import GroupCommitter
from bookingcache.intake.metrics import IntakeMetrics
from bookingcache.store.inbox import Inbox
from bookingcache.store.port import Store
from bookingcache.store.replays import ReplayGuard
from bookingcache.store.subscriptions import Subscriptions

log = logging.getLogger(__name__)


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    notifications: int
    windows_applied: int
    # Mailboxes the call named that are not calendars of the tenant; their parts were ignored.
    ignored_mailboxes: list[str]


class IntakeService:
    def __init__(
        self,
        *,
        store: Store,
        inbox: Inbox,
        subscriptions: Subscriptions,
        replays: ReplayGuard,
        clock: Clock,
        metrics: IntakeMetrics,
        max_round_items: int = 5000,
    ) -> None:
        self._store = store
        self._clock = clock
        self.metrics = metrics
        self.directory = IntakeDirectory(subscriptions, clock=clock)
        self.committer = GroupCommitter(
            inbox.append, max_items=max_round_items, on_round=metrics.observe_round
        )
        self.verifier = SignatureVerifier(clock=clock)
        self.shared_replays = replays
        # Told the tenant of a batch that named a subscription the service does not know, with
        # one of the tenant's clientStates.
        self.on_unknown_subscription: Callable[[str], None] | None = None

    async def _commit(self, items: Sequence[InboxItem], *, via: str) -> None:
        try:
            await self.committer.submit(items)
        except NotPersisted:
            self.metrics.commit_failures.inc()
            raise
        if items:
            self.metrics.count_accepted(via, len(items))

    # --- Alternative 1 -------------------------------------------------------------------------
    async def receive_graph(self, tenant_id: str, body: bytes) -> graph.Classified:
        """Commit the authentic notifications of a Graph batch posted to ``tenant_id``'s URL
        (``MalformedBody`` for a body that is not a notification collection)."""
        batch = graph.parse_batch(body)
        classified = await graph.classify(batch, tenant_id=tenant_id, directory=self.directory)
        for reason, count in classified.ignored.items():
            self.metrics.ignored.labels(reason.value).inc(count)
        # Only an authentic notification (one of the tenant's clientStates) of an unknown
        # subscription may make the orchestrator call the tenant's connector.
        if classified.unknown_authentic and self.on_unknown_subscription is not None:
            self.on_unknown_subscription(tenant_id)
        await self._commit(classified.accepted, via="alt1")
        return classified

    # --- Alternative 2 -------------------------------------------------------------------------
    async def receive_relay(
        self,
        tenant_id: str,
        *,
        method: str,
        path_with_query: str,
        headers: Mapping[str, str],
        content_type: str | None,
        body: bytes,
    ) -> RelayOutcome:
        """Verify, validate and apply a relay call; nothing is stored unless all of it is
        valid. Raises ``BadSignature``, ``UnsupportedMediaType``, ``MalformedBody`` (and its
        ``InvalidRelayCall``) or ``NotPersisted``."""
        tenant, message_id = await self._verify(
            tenant_id, method=method, path_with_query=path_with_query, headers=headers, body=body
        )
        try:
            return await self._accept_relay(tenant, content_type=content_type, body=body)
        except BaseException:
            # Not accepted: the sender may retry this very call.
            await self.release_signed(tenant_id, message_id)
            raise

    async def verify_signed(
        self,
        tenant_id: str,
        *,
        method: str,
        path_with_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """Check that a call is signed with the tenant's signing secret, now, for the first
        time (in every process on the database); returns its ``webhook-id``. Raises
        ``BadSignature``, worded the same for a tenant the service does not know."""
        return (
            await self._verify(
                tenant_id,
                method=method,
                path_with_query=path_with_query,
                headers=headers,
                body=body,
            )
        )[1]

    async def _verify(
        self,
        tenant_id: str,
        *,
        method: str,
        path_with_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[Tenant, str]:
        """``verify_signed``, with the tenant as read with its secrets."""
        try:
            tenant, secrets = await self._store.signed_tenant(tenant_id)
        except NotFound as exc:
            # Said as a wrong signature is, so that unsigned callers cannot learn which
            # tenants exist.
            raise BadSignature(NO_MATCH) from exc
        message_id = self.verifier.verify(
            tenant_id=tenant_id,
            secrets=secrets,
            method=method,
            path_with_query=path_with_query,
            headers=headers,
            body=body,
        )
        # verify() checked the timestamp header: a Unix time in seconds inside the window.
        sent_at = dt.datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=dt.UTC)
        try:
            claimed = await self.shared_replays.claim(tenant_id, message_id, sent_at=sent_at)
        except BaseException:
            self.verifier.release(tenant_id, message_id)
            raise
        if not claimed:
            # Accepted by another process on this database: a replay (this process keeps
            # the id reserved too).
            raise BadSignature("this webhook-id was already accepted (replay)")
        return tenant, message_id

    async def release_signed(self, tenant_id: str, message_id: str) -> None:
        """Forget a verified call that was not accepted after all, so that its sender may send
        this very call again."""
        self.verifier.release(tenant_id, message_id)
        try:
            await asyncio.shield(self.shared_replays.release(tenant_id, message_id))
        except Exception:  # noqa: BLE001 (it expires with the window; the original error matters)
            log.warning("could not release webhook-id %s of %s", message_id, tenant_id)

    async def _accept_relay(
        self, tenant: Tenant, *, content_type: str | None, body: bytes
    ) -> RelayOutcome:
        tenant_id = tenant.id
        if not is_json(content_type):
            raise UnsupportedMediaType("the relay call must be sent as application/json")
        call = relay.parse_call(body)
        known = await self._store.calendar_names(tenant_id, call.mailboxes())
        unknown, dropped = relay.drop_unknown(call, known)
        items = relay.inbox_items(call, tenant_id=tenant_id, known=known)
        applied = 0
        if call.windows and EventSource(tenant.event_source) is EventSource.PUSH:
            for window in call.windows:
                await self._store.replace_window(
                    tenant_id,
                    known[window.mailbox],
                    window_start=window.start,
                    window_end=window.end,
                    events=withhold_titles(window.basic_events(), tenant.title_policy),
                    synced_at=self._clock.now(),
                )
                applied += 1
            self.metrics.pushed_windows.inc(applied)
        await self._commit(items, via="alt2")
        if dropped:
            self.metrics.ignored.labels("unknown_mailbox").inc(dropped)
        return RelayOutcome(
            notifications=len(items), windows_applied=applied, ignored_mailboxes=unknown
        )
