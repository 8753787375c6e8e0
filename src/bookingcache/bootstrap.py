"""The composition root: the one place that reads the environment, chooses the real adapters and
wires every part of a service process together.

``settings_from_environment`` reads the settings (``BOOKINGCACHE_*``). ``build_container``
opens the store and builds the adapters of the store ports, the connector client, the event
sources, the sync runtime, intake, the read model and the subscription orchestration; nothing
is built later or anywhere else. ``open_service`` (the app of ``bookingcache serve``, built by
``service_app``) and ``open_worker`` (``bookingcache worker``) then start what their process
runs. Tests call them with their own settings, a ``FixedClock`` and transports to fakes.

It runs a little over 500 lines: it is the one composition root, each part it wires a few lines
of construction; split up, the wiring of one process would be read across files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic_settings import BaseSettings, SettingsConfigDict

from bookingcache.api.app import create_app
from bookingcache.clock import Clock, SystemClock
from bookingcache.contract.client import ConnectorClient
from bookingcache.contract.outbound import OutboundPolicy, check_url
from bookingcache.contract.signing import TOLERANCE
from bookingcache.errors import InvalidInput, StoreUnavailable
from bookingcache.intake.metrics import IntakeMetrics
from bookingcache.intake.service import IntakeService
from bookingcache.orchestration.health import HealthMetrics
from bookingcache.orchestration.orchestrator import Orchestrator
from bookingcache.read.model import ReadModel
from bookingcache.read.stream import StreamHub
from bookingcache.read.streammetrics import StreamMetrics
from bookingcache.read.tickets import StreamTickets
from bookingcache.settings import (
    OrchestrationSettings,
    Settings,
    SyncSettings,
    admin_token_of,
    ensure_admin_token,
    ensure_secrets_key,
    secrets_keys_of,
)
from bookingcache.store.audit import AuditLog
from bookingcache.store.duties import DutyKeeper, DutyMetrics
from bookingcache.store.inbox import Inbox
from bookingcache.store.jobs import JobQueue
from bookingcache.store.port import Store
from bookingcache.store.probe import DatabaseMetrics, DatabaseProbe
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.audit import SqlAuditLog
from bookingcache.store.sql.cluster import SqlCluster
from bookingcache.store.sql.dutystate import SqlDutyState
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.notices import NoticesCollector
from bookingcache.store.sql.replays import SqlReplayGuard
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from bookingcache.store.subscriptions import Subscriptions
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.runtime import SyncRuntime
from bookingcache.sync.sources.connector import ConnectorSource
from bookingcache.sync.sources.graph import GraphSource
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.worker import SourceSet

log = logging.getLogger(__name__)

_DATABASE_RETRY_S = 0.5
# How long one step of stopping a process may take (``Container.close``).
STOP_STEP_S = 15.0


# --- settings from the environment -------------------------------------------------------------
class _ServiceEnvironment(Settings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKINGCACHE_", extra="ignore")


class _SyncEnvironment(SyncSettings, BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOOKINGCACHE_SYNC_", env_nested_delimiter="__", extra="ignore"
    )


class _OrchestrationEnvironment(OrchestrationSettings, BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOOKINGCACHE_ORCHESTRATION_", env_nested_delimiter="__", extra="ignore"
    )


# Settings that moved to each tenant's configuration in the admin API: a process that finds one
# refuses to start rather than ignore what the operator meant (docs/operations.md).
REMOVED_VARIABLES = {
    "BOOKINGCACHE_ORCHESTRATION_NOTIFICATION_MODES": "notification_mode",
    "BOOKINGCACHE_SYNC_GRAPH__TENANTS": "graph",
}


def refuse_removed_variables(environ: Mapping[str, str]) -> None:
    """``InvalidInput`` naming every removed variable that is set, and how to move from it."""
    found = sorted(name for name in REMOVED_VARIABLES if name in environ)
    if not found:
        return
    fields = " and ".join(f"`{REMOVED_VARIABLES[name]}`" for name in found)
    raise InvalidInput(
        f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} no longer read: each "
        f"tenant's {fields} {'is' if len(found) == 1 else 'are'} set through the admin API "
        "(PATCH /v1/tenants/{tenant}) and take effect in every process without a restart. Move "
        "each tenant's entry there, then unset the variable (docs/operations.md, \"Moving from "
        'the environment JSON")'
    )


def settings_from_environment(**overrides: Any) -> Settings:
    """The settings from ``BOOKINGCACHE_*`` (``BOOKINGCACHE_SYNC_*`` and
    ``BOOKINGCACHE_ORCHESTRATION_*`` for the nested ones), with ``overrides`` (those not None,
    say from the command line) on top. A removed variable that is still set refuses
    (``refuse_removed_variables``)."""
    refuse_removed_variables(os.environ)
    given = {name: value for name, value in overrides.items() if value is not None}
    service = _ServiceEnvironment(**given)
    values = service.model_dump(exclude={"sync", "orchestration"})
    settings = Settings(
        **values,
        sync=SyncSettings(**_SyncEnvironment().model_dump()),
        orchestration=OrchestrationSettings(**_OrchestrationEnvironment().model_dump()),
    )
    check_outbound_settings(settings)
    return settings


def check_outbound_settings(settings: Settings) -> None:
    """Refuse, outside development, outbound URLs of the settings that break the outbound rules
    (``contract.outbound``): a public base URL (where Graph is told to deliver) that is not
    https or names a loopback, private or link-local host, and Graph or authority URLs that are
    not https or carry credentials. ``InvalidInput`` says which setting and why."""
    if settings.environment == "development":
        return
    policy = OutboundPolicy.for_environment(settings.environment)
    checks = [
        ("BOOKINGCACHE_SYNC_GRAPH__AUTHORITY_HOST", settings.sync.graph.authority_host, False),
        ("BOOKINGCACHE_SYNC_GRAPH__GRAPH_BASE_URL", settings.sync.graph.graph_base_url, False),
    ]
    if settings.public_base_url is not None:
        checks.insert(0, ("BOOKINGCACHE_PUBLIC_BASE_URL", settings.public_base_url, True))
    for name, url, public in checks:
        problem = check_url(url, policy, public=public)
        if problem is not None:
            raise InvalidInput(
                f"{name} is refused in {settings.environment}: {problem} (only "
                "BOOKINGCACHE_ENVIRONMENT=development allows it)"
            )


# --- the container ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transports:
    """Where outbound HTTP goes; None: the network. Tests put fakes or the emulator here."""

    graph: httpx.AsyncBaseTransport | None = None
    connector: httpx.AsyncBaseTransport | None = None


@dataclass(slots=True)
class Container:
    """The composed parts one service process runs with."""

    settings: Settings
    clock: Clock
    metrics: CollectorRegistry
    store: Store
    audit: AuditLog
    subscriptions: Subscriptions
    queue: JobQueue
    inbox: Inbox
    connector: ConnectorClient
    sync: SyncRuntime
    intake: IntakeService
    read_model: ReadModel
    stream_hub: StreamHub
    # Issues and checks stream tickets; None in a container without an admin token (a worker).
    tickets: StreamTickets | None
    # None when the subscription orchestration is turned off.
    orchestrator: Orchestrator | None
    database_probe: DatabaseProbe
    # This process's cluster duties, heartbeat and incarnation (docs/operations.md).
    duties: DutyKeeper

    @property
    def admin_token(self) -> str:
        return admin_token_of(self.settings)

    @property
    def claims_held(self) -> int:
        """Refresh jobs this process's worker holds claimed now."""
        return self.sync.worker.refreshing

    @property
    def stream_tickets(self) -> StreamTickets:
        if self.tickets is None:
            raise InvalidInput("this container has no admin token to sign stream tickets with")
        return self.tickets

    def start_service(self) -> None:
        """The API process: the read model follows the store's signals, the orchestration runs,
        and the worker too when ``settings.run_worker``."""
        self.read_model.attach()
        self.stream_hub.attach()
        self.database_probe.start()
        self.duties.launch()
        if self.orchestrator is not None:
            self.orchestrator.start()
        if self.settings.run_worker:
            self.start_worker()

    def start_worker(self) -> None:
        self.database_probe.start()
        self.duties.launch()
        self.sync.start()

    async def close(self, *, step_s: float = STOP_STEP_S) -> None:
        """Stop what runs (stopping what never started is nothing), then close the clients.

        Each step has ``step_s``: one that fails or overruns is logged, with what every task
        of the process is waiting on, and the stop goes on, so that a process told to stop
        always stops (the database rolls back what a connection left open, and leases run
        out)."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if self.orchestrator is not None:
            steps.append(("the subscription orchestration", self.orchestrator.stop))
        steps += [
            ("the sync worker", self.sync.stop),
            ("the cluster duties", self.duties.stop),
            ("the database probe", self.database_probe.stop),
            ("the change stream", self.stream_hub.detach),
            ("the read model", self.read_model.detach),
            ("the inbox's last commit", self.intake.committer.drain),
            ("the connector client", self.connector.aclose),
            ("the store", self.store.close),
        ]
        for name, step in steps:
            await stop_within(name, step, step_s)


async def stop_within(name: str, step: Callable[[], Awaitable[None]], limit_s: float) -> bool:
    """Run one step of a stop for at most ``limit_s``; False (logged) when it failed or
    overran, in which case it is left to end on its own."""
    task = asyncio.ensure_future(step())
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if not done:
        log.error(
            "stopping %s took longer than %g s; the stop goes on without it. "
            "What the process's tasks wait on:\n%s",
            name,
            limit_s,
            tasks_waiting(),
        )
        task.add_done_callback(_forget)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("stopping %s failed", name, exc_info=task.exception())
        return False
    return True


def _forget(task: asyncio.Future[None]) -> None:
    # A step that ended after the stop went on: its outcome was already reported as overrun.
    if not task.cancelled():
        task.exception()


def tasks_waiting(*, depth: int = 12) -> str:
    """Every other task of the running loop and the chain of awaits it is suspended in, from
    its coroutine to the innermost one (a task's own stack shows only its outermost frame)."""
    lines: list[str] = []
    current = asyncio.current_task()
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        if task is current:
            continue
        lines.append(f"- {task.get_name()}")
        awaited: Any = task.get_coro()
        for _ in range(depth):
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is None:
                if awaited is not None:
                    lines.append(f"    awaiting {type(awaited).__name__}")
                break
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return "\n".join(lines)


def secret_box(settings: Settings) -> SecretBox:
    """What seals the stored secrets: the settings' keys (``ensure_secrets_key``)."""
    return SecretBox(secrets_keys_of(ensure_secrets_key(settings)))


async def open_store_when_ready(settings: Settings, *, clock: Clock) -> SqlStore:
    """Open the store and migrate it to head, waiting up to ``database_wait_s`` for a database
    that is still starting (a container orchestrator may start us first)."""
    box = secret_box(settings)
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        # Private: the database in it holds the tenants' secrets (an existing one is kept as is).
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    deadline = time.monotonic() + settings.database_wait_s
    while True:
        try:
            return await open_store(
                url,
                box=box,
                migrate=True,
                clock=clock,
                fsync=settings.fsync,
                idle_transaction_s=settings.database_idle_transaction_s,
                pool_size=settings.database_pool_size,
            )
        except StoreUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database not ready, retrying: %s", exc)
            await asyncio.sleep(_DATABASE_RETRY_S)


async def reseal_secrets(settings: Settings) -> int:
    """Open the store (migrating it) and seal every stored secret again with the newest key of
    ``BOOKINGCACHE_SECRETS_KEY``; how many were sealed (``bookingcache admin reseal``)."""
    store = await open_store_when_ready(settings, clock=SystemClock())
    try:
        return await store.reseal_secrets()
    finally:
        await store.close()


async def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    metrics: CollectorRegistry | None = None,
    transports: Transports | None = None,
) -> Container:
    """Every part of a service process, built and wired, nothing started. Outside development
    the settings must carry the secrets key (``ensure_secrets_key``)."""
    check_outbound_settings(settings)
    settings = ensure_secrets_key(settings)
    if settings.public_base_url is None and settings.environment != "development":
        # The default, http://host:port, is for development: the orchestrator refuses to hand
        # it to a connector (contract.outbound) and says so on each calendar's health.
        log.warning(
            "BOOKINGCACHE_PUBLIC_BASE_URL is not set: Graph cannot deliver notifications to %s "
            "outside development, so subscriptions of tenants in direct mode will fail",
            settings.resolved_public_base_url,
        )
    clock = clock or SystemClock()
    registry = metrics if metrics is not None else CollectorRegistry()
    transports = transports or Transports()
    store = await open_store_when_ready(settings, clock=clock)
    if store.dialect == "postgresql":
        registry.register(NoticesCollector(lambda: store.notices))
    sync_settings = settings.sync
    duties = DutyKeeper(
        SqlCluster(store, clock=clock),
        clock=clock,
        incarnation=incarnation_of(settings),
        instance_id=instance_id_of(settings),
        lease_s=settings.duty_lease_s,
        renew_s=settings.duty_renew_s,
        heartbeat_s=settings.heartbeat_s,
        peer_dead_after_s=settings.peer_dead_after_s,
        metrics=DutyMetrics.of(registry),
    )
    duty_state = SqlDutyState(store, clock=clock)
    subscriptions = SqlSubscriptions(store, clock=clock)
    queue = SqlJobQueue(
        store,
        clock=clock,
        coalesce_s=sync_settings.coalesce_ms / 1000,
        coalesce_window_s=sync_settings.coalesce_window_ms / 1000,
        lease_s=sync_settings.lease_s,
        max_attempts=sync_settings.max_tries,
    )
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    connector = ConnectorClient(
        clock=clock,
        events_timeout_s=sync_settings.connector_timeout_s,
        subscriptions_timeout_s=settings.orchestration.connector_timeout_s,
        transport=transports.connector,
        policy=OutboundPolicy.for_environment(settings.environment),
    )
    sources = SourceSet(
        connector=ConnectorSource(store, client=connector),
        graph=GraphSource(
            sync_settings.graph, clock=clock, transport=transports.graph, store=store
        ),
        push=PushSource(),
    )
    sync = SyncRuntime(
        store=store,
        queue=queue,
        inbox=inbox,
        sources=sources,
        settings=sync_settings,
        clock=clock,
        metrics=SyncMetrics.of(registry),
        # Claims are made under the incarnation, so that a restart or a peer can release them.
        worker_id=duties.incarnation,
        duties=duties,
        subscriptions=subscriptions,
        duty_state=duty_state,
    )
    intake = IntakeService(
        store=store,
        inbox=inbox,
        subscriptions=subscriptions,
        replays=SqlReplayGuard(store, clock=clock, window=TOLERANCE),
        clock=clock,
        metrics=IntakeMetrics.of(registry),
    )
    orchestrator: Orchestrator | None = None
    if settings.orchestration.enabled:
        orchestrator = Orchestrator(
            store=store,
            subscriptions=subscriptions,
            queue=queue,
            connector=connector,
            clock=clock,
            public_base_url=settings.resolved_public_base_url,
            settings=settings.orchestration,
            metrics=HealthMetrics.of(registry),
            state=duty_state,
            duties=duties,
        )
        # A notification from a subscription the service does not know: converge the tenant.
        intake.on_unknown_subscription = orchestrator.unknown_subscription
    read_model = ReadModel(
        store,
        clock,
        poll_interval=dt.timedelta(milliseconds=settings.change_feed_poll_ms),
        token_refresh=dt.timedelta(seconds=settings.read_token_refresh_s),
    )
    feed_poll = dt.timedelta(milliseconds=settings.change_feed_poll_ms)
    stream_hub = StreamHub(
        read_model,
        store,
        clock,
        metrics=StreamMetrics.of(registry),
        queue_bound=settings.stream_queue_events,
        poll_interval=feed_poll,
    )
    tickets: StreamTickets | None = None
    if settings.admin_token is not None:
        tickets = StreamTickets(
            admin_token_of(settings),
            clock,
            lifetime=dt.timedelta(seconds=settings.stream_ticket_ttl_s),
        )
    return Container(
        settings=settings,
        clock=clock,
        metrics=registry,
        store=store,
        audit=SqlAuditLog(store, clock=clock),
        subscriptions=subscriptions,
        queue=queue,
        inbox=inbox,
        connector=connector,
        sync=sync,
        intake=intake,
        read_model=read_model,
        stream_hub=stream_hub,
        tickets=tickets,
        orchestrator=orchestrator,
        database_probe=DatabaseProbe(store, DatabaseMetrics.of(registry)),
        duties=duties,
    )


def instance_id_of(settings: Settings) -> str:
    """The process's stable identity: ``instance_id``, or host:pid (a new one at each start)."""
    return settings.instance_id or f"{socket.gethostname()[:100]}:{os.getpid()}"


def incarnation_of(settings: Settings) -> str:
    """A new incarnation of the instance at each start: ``<instance id>@<random>``."""
    return f"{instance_id_of(settings)}@{uuid.uuid4().hex[:12]}"


async def open_service(
    settings: Settings,
    *,
    clock: Clock | None = None,
    metrics: CollectorRegistry | None = None,
    transports: Transports | None = None,
) -> Container:
    """The container of an API process (``bookingcache serve``), started: its settings carry
    the admin token (``ensure_admin_token``)."""
    container = await build_container(
        ensure_admin_token(settings), clock=clock, metrics=metrics, transports=transports
    )
    container.start_service()
    return container


async def open_worker(
    settings: Settings,
    *,
    clock: Clock | None = None,
    metrics: CollectorRegistry | None = None,
    transports: Transports | None = None,
) -> Container:
    """The container of a worker process (``bookingcache worker``): only the sync engine runs."""
    container = await build_container(settings, clock=clock, metrics=metrics, transports=transports)
    container.start_worker()
    return container


def service_app(
    settings: Settings, *, clock: Clock | None = None, transports: Transports | None = None
) -> FastAPI:
    """The service's ASGI app: its lifespan opens the process's container (``open_service``)
    with the app's metrics registry, and closes it."""

    async def services(registry: CollectorRegistry) -> Container:
        return await open_service(settings, clock=clock, metrics=registry, transports=transports)

    return create_app(settings, services=services)


def event_loop_runner() -> asyncio.Runner:
    """The runner of a server process: uvloop where it is installed (it comes with
    ``uvicorn[standard]``), asyncio's own loop elsewhere. Its cross-thread wake-ups, which every
    SQLite statement and thread hand-off costs, are much cheaper than asyncio's self-pipe."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop does not exist on Windows
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
