"""A whole deployment on loopback, in this process: the Graph emulator (TLS, its own thread),
the real connector ASGI app and the service, each on a real port in a thread, so the emulator
delivers notifications to the service (Alternative 1) or to the connector's relay
(Alternative 2) over HTTP exactly as in production."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bookingcache.bootstrap import service_app
from bookingcache.settings import OrchestrationSettings, Settings, SyncSettings
from graph_emulator.auth import App
from graph_emulator.lifecycle import SubscriptionHub
from graph_emulator.server import BackgroundEmulator
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import SECRETS_KEY
from tests.support.emulated import emulated_graph, serve_connector
from tests.support.servers import bound_socket, loopback_url, serve_in_thread

TENANT = "contoso"

# Short bounds everywhere, so that a deployment reacts within moments.
FAST = OrchestrationSettings(
    debounce_s=0.3,
    tick_s=0.2,
    reconverge_every_s=3600,
    backoff_base_s=0.5,
    backoff_max_s=2.0,
    connector_timeout_s=20,
    silent_after=2,
    silent_resync_s=1.0,
    react_min_interval_s=0.5,
)


FAST_SYNC = SyncSettings(coalesce_ms=50, poll_interval_ms=50, backoff_base_s=0.2)


@dataclass
class World:
    emulator: BackgroundEmulator
    app: App
    service_url: str
    admin: httpx.Client
    control: httpx.Client
    tmp: Path
    stack: contextlib.ExitStack
    settings: Settings
    # The service's server alone, so that it can stop and start again on its port while the
    # emulator and the connector run on.
    service: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    connector_url: str = ""
    read_token: str = ""
    signing_secret: str = ""
    rooms: list[dict[str, Any]] = field(default_factory=list)
    # The connector sends the changed calendars' windows with its relay calls (``push``), and
    # every calendar's window at least every ``push_reconcile_s``.
    push_events: bool = False
    push_reconcile_s: float = 900.0

    @property
    def hub(self) -> SubscriptionHub:
        hub = self.emulator.state.notifications
        assert isinstance(hub, SubscriptionHub)
        return hub

    def start_service(self, sock: socket.socket | None = None, **changes: Any) -> None:
        """The service on ``sock``, or on its port again after ``stop_service``; ``changes``:
        to its settings (another ``database_url``, say)."""
        self.settings = self.settings.model_copy(update=changes)
        sock = sock or bound_socket(int(self.service_url.rsplit(":", 1)[1]))
        self.service.enter_context(serve_in_thread(service_app(self.settings), sock))

    def stop_service(self) -> None:
        self.service.close()

    def start_connector(self, sock: socket.socket) -> None:
        self.stack.enter_context(
            serve_connector(
                self.emulator,
                self.app,
                sock,
                webhook_secret=self.signing_secret,
                service_url=self.service_url,
                service_tenant=TENANT,
                state_dir=self.tmp / "connector",
                relay_max_backoff_s=0.5,
                push_events=self.push_events,
                # The same bound whether or not the subscriptions are listening: the tests
                # that shorten it drop notifications on purpose.
                push_reconcile_s=self.push_reconcile_s,
                push_reconcile_healthy_s=self.push_reconcile_s,
            )
        )

    # --- the service's API --------------------------------------------------------------------
    def link(self, room_id: str, mailbox: str, **extra: Any) -> None:
        body = {"mailbox": mailbox, "name": room_id, **extra}
        answer = self.admin.put(f"/v1/tenants/{TENANT}/rooms/{room_id}", json=body)
        assert answer.status_code in (200, 201), answer.text

    def unlink(self, room_id: str) -> None:
        answer = self.admin.delete(f"/v1/tenants/{TENANT}/rooms/{room_id}")
        assert answer.status_code == 204, answer.text

    def health(self) -> dict[str, dict[str, Any]]:
        answer = self.admin.get(f"/v1/tenants/{TENANT}/subscriptions")
        assert answer.status_code == 200, answer.text
        return {row["mailbox"]: row for row in answer.json()["calendars"]}

    # --- the emulator's view -------------------------------------------------------------------
    def graph_subscriptions(self) -> dict[str, dict[str, Any]]:
        """Live subscriptions at "Graph", by mailbox UPN."""
        answer = self.control.get("/subscriptions")
        assert answer.status_code == 200, answer.text
        by_id = {m.id: m.upn for m in self.emulator.state.directory.rooms()}
        return {by_id[s["mailboxId"]]: s for s in answer.json()["value"]}


@contextlib.contextmanager
def deployment(
    tmp: Path,
    *,
    orchestration: OrchestrationSettings,
    sync: SyncSettings,
    alternative: int = 1,
    event_source: str = "connector",
    push_reconcile_s: float = 900.0,
    **service: Any,
) -> Iterator[World]:
    """The deployment; ``event_source`` is the tenant's: ``connector`` (the worker reads the
    connector), ``graph`` (the worker reads the emulator with the service's own app, calendarView
    delta) or ``push`` (the connector's relay calls carry the windows). ``service``: more of the
    service's settings (its ``database_url``, say)."""
    with contextlib.ExitStack() as stack:
        graph = stack.enter_context(emulated_graph(tmp))
        emulator, state = graph.emulator, graph.state
        service_sock, connector_sock = bound_socket(), bound_socket()
        stack.callback(service_sock.close)
        stack.callback(connector_sock.close)
        service_url = loopback_url(service_sock)
        if event_source == "graph":
            sync = sync.model_copy(update={"graph": graph.service_graph()})
        settings = Settings(
            environment="development",
            data_dir=tmp / "service",
            public_base_url=service_url,
            admin_token=SecretStr(ADMIN_TOKEN),
            secrets_key=SecretStr(SECRETS_KEY),
            run_worker=True,
            sync=sync,
            orchestration=orchestration,
            **service,
        )
        admin = httpx.Client(base_url=service_url, headers=ADMIN, timeout=30)
        world = World(
            emulator=emulator,
            app=graph.apps["full"],
            service_url=service_url,
            admin=admin,
            control=graph.control,
            tmp=tmp,
            stack=stack,
            settings=settings,
            push_events=event_source == "push",
            push_reconcile_s=push_reconcile_s,
        )
        stack.enter_context(world.service)
        world.start_service(service_sock)
        stack.enter_context(admin)
        connector_url = loopback_url(connector_sock)
        created = admin.post(
            "/v1/tenants",
            json={
                "id": TENANT,
                "name": "Contoso",
                "connector_url": connector_url,
                "event_source": event_source,
                "default_time_zone": "Europe/Berlin",
                "notification_mode": "relay" if alternative == 2 else "direct",
            }
            | ({"graph": {"directory_tenant": state.tenant_id}} if event_source == "graph" else {}),
        )
        assert created.status_code == 201, created.text
        secrets = created.json()["secrets"]
        world.connector_url = connector_url
        world.signing_secret = secrets["signing_secret"]
        world.read_token = secrets["read_token"]
        world.start_connector(connector_sock)
        world.rooms = [
            {"upn": m.upn, "id": m.id, "building": m.building, "floor": m.floor}
            for m in sorted(state.directory.rooms(), key=lambda m: m.upn)
        ]
        yield world
