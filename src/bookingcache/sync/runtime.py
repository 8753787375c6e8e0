"""The sync engine of one process: the worker and the reconciliation sweep over the job queue,
reading through the tenants' event sources. The composition root builds it from the ports;
``start`` runs both, which ``bookingcache serve`` does by default and ``bookingcache worker``
does without the API."""

from __future__ import annotations

import logging

from bookingcache.clock import Clock
from bookingcache.settings import SyncSettings
from bookingcache.store.duties import DutyKeeper
from bookingcache.store.dutystate import DutyState
from bookingcache.store.inbox import Inbox
from bookingcache.store.jobs import JobQueue
from bookingcache.store.port import Store
from bookingcache.store.subscriptions import Subscriptions
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.sweep import Sweep
from bookingcache.sync.worker import SourceSet, Worker

log = logging.getLogger(__name__)


class SyncRuntime:
    def __init__(
        self,
        *,
        store: Store,
        queue: JobQueue,
        inbox: Inbox,
        sources: SourceSet,
        settings: SyncSettings,
        clock: Clock,
        metrics: SyncMetrics,
        worker_id: str | None = None,
        duties: DutyKeeper | None = None,
        subscriptions: Subscriptions | None = None,
        duty_state: DutyState | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.sources = sources
        self.worker = Worker(
            store=store,
            queue=queue,
            sources=sources,
            settings=settings,
            clock=clock,
            worker_id=worker_id,
            metrics=metrics,
        )
        self.sweep = Sweep(
            store=store,
            queue=queue,
            inbox=inbox,
            clock=clock,
            bound_s=settings.sweep_bound_s,
            healthy_bound_s=settings.sweep_healthy_bound_s,
            interval_s=settings.sweep_interval_s,
            rate_per_s=settings.sweep_rate_per_s,
            inbox_retention_s=settings.inbox_retention_days * 86_400,
            change_feed_retention_s=settings.change_feed_retention_hours * 3600,
            duties=duties,
            subscriptions=subscriptions,
            duty_state=duty_state,
            metrics=metrics,
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
