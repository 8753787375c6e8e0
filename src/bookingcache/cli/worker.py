"""``bookingcache worker``: the sync worker and the reconciliation sweep without the HTTP API,
for running intake (``serve --no-worker``) and refreshes in separate processes. Several workers
may share one PostgreSQL database; jobs are claimed with leases."""

from __future__ import annotations

import asyncio
import logging
import signal

from bookingcache.bootstrap import open_worker, settings_from_environment
from bookingcache.settings import Settings
from bookingcache.telemetry.logs import configure_logging

log = logging.getLogger(__name__)


def run_worker(*, data_dir: str | None = None, database_url: str | None = None) -> int:
    settings = settings_from_environment(
        data_dir=data_dir, database_url=database_url, run_worker=True
    )
    configure_logging(settings)
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    container = await open_worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, stop.set)
    try:
        print(f"bookingcache worker {container.sync.worker.worker_id} running", flush=True)
        await stop.wait()
        log.info("stopping: finishing running refreshes")
    finally:
        await container.close()
    return 0
