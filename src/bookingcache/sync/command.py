"""``bookingcache worker``: the sync worker and the reconciliation sweep without the HTTP API,
for running intake (``serve --no-worker``) and refreshes in separate processes. Several workers
may share one PostgreSQL database; jobs are claimed with leases. On SQLite the worker also
stores what the intake journal of a killed ``serve`` process left, without waiting for a
``serve`` to start again."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import CollectorRegistry

from bookingcache.bootstrap import journal_of, open_store_when_ready
from bookingcache.clock import SystemClock
from bookingcache.logs import configure_logging
from bookingcache.serve import settings_from
from bookingcache.settings import Settings
from bookingcache.sync.runtime import SyncRuntime

log = logging.getLogger(__name__)


def run_worker(*, data_dir: str | None = None, database_url: str | None = None) -> int:
    settings = settings_from(data_dir=data_dir, database_url=database_url, run_worker=True)
    configure_logging(settings)
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    clock = SystemClock()
    store = await open_store_when_ready(settings, clock=clock)
    runtime = SyncRuntime(store, clock=clock)
    journal = journal_of(settings, store, runtime.queue, clock=clock, metrics=CollectorRegistry())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, stop.set)
    try:
        if journal is not None:
            recovered = await journal.recover_orphans()
            if recovered:
                log.info("stored %d notifications a stopped service left", recovered)
            journal.watch_orphans()
        runtime.start()
        print(f"bookingcache worker {runtime.worker.worker_id} running", flush=True)
        await stop.wait()
        log.info("stopping: finishing running refreshes")
    finally:
        if journal is not None:
            await journal.close()
        await runtime.stop()
        await store.close()
    return 0
