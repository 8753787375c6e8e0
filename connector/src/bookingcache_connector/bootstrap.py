"""The composition root: settings in, a wired connector out. Tests replace the transports."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from . import redact
from .auth import MsalTokenProvider, TokenProvider, msal_http_client
from .clock import Clock, SystemClock
from .config import Settings
from .graph import GraphClient
from .loops import Loops
from .metrics import Metrics
from .relay import Relay
from .service import ServiceClient
from .signing import Signer, Verifier
from .store import StateStore, StoredCalls
from .subscriptions import SubscriptionManager
from .web import Handlers


@dataclass
class Connector:
    settings: Settings
    clock: Clock
    tokens: TokenProvider
    graph: GraphClient
    store: StateStore
    seen_calls: StoredCalls
    subscriptions: SubscriptionManager
    # The signed client of the service (CONNECTOR_SERVICE_URL, _TENANT and _WEBHOOK_SECRET set).
    service: ServiceClient | None
    relay: Relay | None
    handlers: Handlers
    _clients: list[httpx.AsyncClient]
    loops: Loops
    metrics: Metrics

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        close = getattr(self.tokens, "close", None)
        if callable(close):
            close()
        self.store.close()
        self.seen_calls.close()


def build_connector(
    settings: Settings,
    *,
    clock: Clock | None = None,
    tokens: TokenProvider | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    service_transport: httpx.AsyncBaseTransport | None = None,
    msal_transport: httpx.BaseTransport | None = None,
    rng: random.Random | None = None,
) -> Connector:
    redact.install()
    clock = clock or SystemClock()
    metrics = Metrics()
    loops = Loops()
    tokens = tokens or MsalTokenProvider(
        settings, http_client=msal_http_client(settings, msal_transport), metrics=metrics
    )
    graph_http = httpx.AsyncClient(
        verify=settings.ssl_context(),
        trust_env=False,
        timeout=settings.http_timeout_s,
        transport=graph_transport,
    )
    clients = [graph_http]
    graph = GraphClient(
        base_url=settings.graph_url,
        tokens=tokens,
        http=graph_http,
        clock=clock,
        per_mailbox_concurrency=settings.per_mailbox_concurrency,
        max_retries=settings.graph_max_retries,
        rng=rng,
        metrics=metrics,
    )
    store = StateStore.in_directory(settings.state_dir)
    subscriptions = SubscriptionManager(
        graph=graph,
        store=store,
        clock=clock,
        expiration_minutes=settings.expiration_minutes,
        renew_below_hours=settings.renew_below_hours,
        metrics=metrics,
    )
    relay = None
    service: ServiceClient | None = None
    if settings.service_url and settings.service_tenant and settings.webhook_secret:
        service_http = httpx.AsyncClient(
            timeout=settings.http_timeout_s,
            transport=service_transport,
            trust_env=False,
            verify=settings.ssl_context(),
        )
        clients.append(service_http)
        service = ServiceClient(
            base_url=settings.service_url,
            tenant=settings.service_tenant,
            signer=Signer(settings.webhook_secret, clock),
            http=service_http,
        )

        async def refresh_map() -> None:
            await subscriptions.list_all()

        async def read_window(mailbox: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
            return await graph.calendar_view(mailbox, start, end)

        relay = Relay(
            store=store,
            clock=clock,
            service=service,
            client_states=settings.client_states,
            refresh_map=refresh_map,
            renew=subscriptions.renew_one,
            read_window=read_window if settings.push_events else None,
            window_days=settings.window_days,
            titles=settings.title_policy,
            resync_after_s=settings.relay_resync_after_s,
            max_backoff_s=settings.relay_max_backoff_s,
            reconcile_s=settings.push_reconcile_s,
            reconcile_rate_per_s=settings.push_reconcile_rate_per_s,
            reconcile_healthy_s=settings.push_reconcile_healthy_s,
            rng=rng,
            loops=loops,
            metrics=metrics,
        )
    seen_calls = StoredCalls.in_directory(settings.state_dir)
    verifier = (
        Verifier(
            settings.webhook_secret,
            clock,
            tolerance_s=settings.signature_tolerance_s,
            seen=seen_calls,
        )
        if settings.webhook_secret
        else None
    )
    handlers = Handlers(
        clock=clock,
        verifier=verifier,
        graph=graph,
        subscriptions=subscriptions,
        relay=relay,
        titles=settings.title_policy,
        loops=loops,
        store=store,
    )
    return Connector(
        settings=settings,
        clock=clock,
        tokens=tokens,
        graph=graph,
        store=store,
        seen_calls=seen_calls,
        subscriptions=subscriptions,
        service=service,
        relay=relay,
        handlers=handlers,
        _clients=clients,
        loops=loops,
        metrics=metrics,
    )
