"""The composition root: the one place that chooses real adapters and wires them together.

Tests call ``build_container`` with their own settings (a temporary data directory, a test
database) and a ``FixedClock``; nothing else in the service constructs a store or a clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from bookingcache.clock import Clock, SystemClock
from bookingcache.errors import StoreUnavailable
from bookingcache.readmodel import ReadModel
from bookingcache.settings import Settings, admin_token_of, ensure_admin_token
from bookingcache.store.notices import NoticesCollector
from bookingcache.store.port import Store
from bookingcache.store.sql import SqlStore, open_store
from bookingcache.sync.queue import JobQueue
from bookingcache.sync.runtime import SyncRuntime
from bookingcache.sync.settings import SyncSettings

log = logging.getLogger(__name__)

_DATABASE_RETRY_S = 0.5


@dataclass(slots=True)
class Container:
    """The composed objects one service process runs with."""

    settings: Settings
    store: Store
    clock: Clock
    read_model: ReadModel
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    # The sync engine: its queue is intake's way in; its worker runs when settings.run_worker.
    sync: SyncRuntime | None = None

    @property
    def admin_token(self) -> str:
        return admin_token_of(self.settings)

    @property
    def queue(self) -> JobQueue | None:
        """The sync engine's queue, which intake appends to (and so wakes the worker)."""
        return self.sync.queue if self.sync is not None else None

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        self.read_model.detach()
        await self.store.close()


async def open_store_when_ready(settings: Settings, *, clock: Clock) -> Store:
    """Open the store and migrate it to head, waiting up to ``database_wait_s`` for a database
    that is still starting (a container orchestrator may start us first)."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + settings.database_wait_s
    while True:
        try:
            return await open_store(url, migrate=True, clock=clock, fsync=settings.fsync)
        except StoreUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database not ready, retrying: %s", exc)
            await asyncio.sleep(_DATABASE_RETRY_S)


async def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    metrics: CollectorRegistry | None = None,
    sync_settings: SyncSettings | None = None,
) -> Container:
    settings = ensure_admin_token(settings)
    clock = clock or SystemClock()
    store = await open_store_when_ready(settings, clock=clock)
    read_model = ReadModel(
        store, clock, poll_interval=dt.timedelta(milliseconds=settings.change_feed_poll_ms)
    )
    read_model.attach()
    registry = metrics if metrics is not None else CollectorRegistry()
    if isinstance(store, SqlStore) and store.dialect == "postgresql":
        registry.register(NoticesCollector(lambda: store.notices))
    sync = SyncRuntime(store, clock=clock, settings=sync_settings, metrics=registry)
    if settings.run_worker:
        sync.start()
    return Container(
        settings=settings,
        store=store,
        clock=clock,
        read_model=read_model,
        metrics=registry,
        sync=sync,
    )
