"""Whether the database answers, for Prometheus: every process checks its store (the
readiness check: a round trip and the schema at the newest migration) every few seconds and
keeps the outcome in ``bookingcache_database_up``. A process that cannot reach its database
still answers scrapes, so the gauge, not the scrape, says that the database is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge

from bookingcache.store.port import Store
from bookingcache.telemetry.metricsets import MetricSet

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0
CHECK_TIMEOUT_S = 5.0


class DatabaseMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "bookingcache_database_up",
            "1 when this process's last check of its database (a round trip, and the schema at "
            f"the newest migration; every {CHECK_EVERY_S:.0f} s) succeeded, else 0",
            registry=registry,
        )


class DatabaseProbe:
    """Checks ``store`` every ``every_s`` (at once on ``start``) until ``stop``."""

    def __init__(
        self,
        store: Store,
        metrics: DatabaseMetrics,
        *,
        every_s: float = CHECK_EVERY_S,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.up: bool | None = None

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="database probe")

    async def stop(self) -> None:
        """Stop after the check under way, if any (it has its own timeout): a check cancelled
        in the middle of its statement would leave its connection to be cleaned up by force."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task

    async def check(self) -> bool:
        """Check once and publish the outcome; True when the database answered."""
        try:
            await asyncio.wait_for(self._store.ping(), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 (whatever the failure, the database is down)
            if self.up is not False:
                log.warning("database check failed: %s", exc)
            up = False
        else:
            if self.up is False:
                log.info("database check succeeded again")
            up = True
        self.up = up
        self._metrics.up.set(1 if up else 0)
        return up

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._every_s)
