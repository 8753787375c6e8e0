"""``bookingcache worker``: the sync worker and the reconciliation sweep without the HTTP API,
for running intake (``serve --no-worker``) and refreshes in separate processes. Several workers
may share one PostgreSQL database; jobs are claimed with leases.

With ``--metrics-port`` (``BOOKINGCACHE_METRICS_PORT``) the worker also serves ``/healthz``,
``/readyz`` and ``/metrics`` there (``api.operations``), on the same bounded server as the API,
so that Prometheus scrapes it and a container's health check asks it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator

import uvicorn

from bookingcache.api.operations import operations_app
from bookingcache.api.server import server_config
from bookingcache.bootstrap import Container, open_worker, settings_from_environment
from bookingcache.cli.serve import bind
from bookingcache.errors import BookingCacheError
from bookingcache.settings import Settings, ensure_secrets_key
from bookingcache.telemetry.logs import configure_logging

log = logging.getLogger(__name__)


def run_worker(
    *,
    data_dir: str | None = None,
    database_url: str | None = None,
    host: str | None = None,
    metrics_port: int | None = None,
    instance_id: str | None = None,
) -> int:
    settings = settings_from_environment(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        metrics_port=metrics_port,
        instance_id=instance_id,
        run_worker=True,
    )
    configure_logging(settings)
    # Outside development a missing key refuses to start here, before anything is opened.
    settings = ensure_secrets_key(settings)
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    container = await open_worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, stop.set)
    try:
        async with _operations(container, settings):
            print(f"bookingcache worker {container.sync.worker.worker_id} running", flush=True)
            await stop.wait()
            log.info("stopping: finishing running refreshes")
    finally:
        await container.close()
    return 0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker handles SIGINT/SIGTERM itself (see cli.serve._Server).
        yield


@contextlib.asynccontextmanager
async def _operations(container: Container, settings: Settings) -> AsyncIterator[None]:
    """The metrics port's server while the worker runs (nothing without a metrics port)."""
    if settings.metrics_port is None:
        yield
        return
    sock = bind(settings.host, settings.metrics_port)
    server = _Server(
        server_config(operations_app(container), settings, lifespan="off", log_level="warning")
    )
    running = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if running.done():
                await running
                raise BookingCacheError("the worker's metrics server did not start")
            await asyncio.sleep(0.01)
        host, port = sock.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        print(f"bookingcache worker metrics listening on http://{shown_host}:{port}", flush=True)
        yield
    finally:
        server.should_exit = True
        await running
        sock.close()
