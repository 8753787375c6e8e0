"""The sync engine of one process, composed: queue, sources, worker and sweep.

Intake (in the API process) only needs ``queue``; ``start`` runs the worker and the sweep too,
which ``bookingcache serve`` does by default and ``bookingcache worker`` does without the API.
"""

from __future__ import annotations

import logging

import httpx
from prometheus_client import CollectorRegistry

from bookingcache.clock import Clock
from bookingcache.store.port import Store
from bookingcache.store.sql import SqlStore
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.queue import JobQueue
from bookingcache.sync.settings import SyncSettings
from bookingcache.sync.sources.connector import ConnectorSource
from bookingcache.sync.sources.graph import GraphSource
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.sweep import Sweep
from bookingcache.sync.worker import SourceSet, Worker

log = logging.getLogger(__name__)


class SyncRuntime:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        settings: SyncSettings | None = None,
        graph_transport: httpx.AsyncBaseTransport | None = None,
        connector_transport: httpx.AsyncBaseTransport | None = None,
        worker_id: str | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        if not isinstance(store, SqlStore):
            raise TypeError("the sync engine needs the SQL store (its inbox and jobs tables)")
        self.settings = settings = settings or SyncSettings()
        self.queue = JobQueue(
            store,
            clock=clock,
            coalesce_s=settings.coalesce_ms / 1000,
            coalesce_window_s=settings.coalesce_window_ms / 1000,
            lease_s=settings.lease_s,
            max_attempts=settings.max_tries,
        )
        self.sources = SourceSet(
            connector=ConnectorSource(
                store,
                clock=clock,
                timeout_s=settings.connector_timeout_s,
                transport=connector_transport,
            ),
            graph=GraphSource(settings.graph, clock=clock, transport=graph_transport, store=store),
            push=PushSource(),
        )
        self.worker = Worker(
            store=store,
            queue=self.queue,
            sources=self.sources,
            settings=settings,
            clock=clock,
            worker_id=worker_id,
            metrics=SyncMetrics.of(metrics if metrics is not None else CollectorRegistry()),
        )
        self.sweep = Sweep(
            store=store,
            queue=self.queue,
            clock=clock,
            bound_s=settings.sweep_bound_s,
            interval_s=settings.sweep_interval_s,
            rate_per_s=settings.sweep_rate_per_s,
            inbox_retention_s=settings.inbox_retention_days * 86_400,
        )
        self.running = False

    def start(self) -> None:
        """Run the worker and the reconciliation sweep in this process."""
        if not self.running:
            # On PostgreSQL other processes' intake wakes this worker at once.
            self.queue.follow_other_processes()
            self.worker.start()
            self.sweep.start()
            self.running = True
            log.info("sync worker %s started", self.worker.worker_id)

    async def stop(self, *, grace_s: float = 5.0) -> None:
        if self.running:
            self.queue.stop_following()
            await self.sweep.stop()
            await self.worker.stop(grace_s=grace_s)
            self.running = False
        await self.sources.aclose()
