"""``bookingcache serve``: the service on uvicorn, with one line saying where it listens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from bookingcache.api.server import server_config
from bookingcache.bootstrap import event_loop_runner, service_app, settings_from_environment
from bookingcache.errors import BookingCacheError
from bookingcache.settings import (
    ADMIN_TOKEN_FILE,
    AdminTokenOrigin,
    Settings,
    admin_token_of,
    admin_token_with_origin,
    ensure_secrets_key,
)
from bookingcache.telemetry.logs import configure_logging

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Tells when it listens, so the address is printed only once it is true."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # _serve handles SIGINT/SIGTERM on the event loop; uvicorn's own handlers would re-raise
        # the signal after the graceful shutdown and turn a clean stop into a death by signal.
        yield

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for open connections
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: str | None = None,
    database_url: str | None = None,
    run_worker: bool = True,
    instance_id: str | None = None,
) -> int:
    settings = settings_from_environment(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        run_worker=run_worker,
        instance_id=instance_id,
    )
    configure_logging(settings)
    # Outside development a missing key refuses to start here, before anything is opened.
    settings = ensure_secrets_key(settings)
    settings, origin = admin_token_with_origin(settings)
    with event_loop_runner() as runner:
        return runner.run(_serve(settings, origin))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app is built so that the port (chosen by the
    system for ``--port 0``) is known to the settings, and so to ``public_base_url``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BookingCacheError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


async def _serve(settings: Settings, origin: AdminTokenOrigin) -> int:
    sock = bind(settings.host, settings.port)
    settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    try:
        return await _serve_on(settings, sock, origin)
    finally:
        sock.close()


async def _serve_on(settings: Settings, sock: socket.socket, origin: AdminTokenOrigin) -> int:
    # Bounded request heads, read and keep-alive timeouts (docs/api.md, "Limits").
    config = server_config(
        service_app(settings), settings, host=settings.host, port=settings.port, lifespan="on"
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, server.request_exit)
    running = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if not server.started:
        await running
        log.error("bookingcache did not start")
        return 1
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    where = admin_token_line(settings, origin)
    print(f"bookingcache listening on http://{shown_host}:{port} {where}", flush=True)
    await running
    return 0


def admin_token_line(settings: Settings, origin: AdminTokenOrigin) -> str:
    """Where the admin token is. The token itself only at the start that generated it: a
    configured or stored one would otherwise land in every log that keeps the output."""
    stored = settings.data_dir / ADMIN_TOKEN_FILE
    if origin == "generated":
        return f"admin token: {admin_token_of(settings)} (new; kept in {stored})"
    if origin == "stored":
        return f"(admin token in {stored})"
    return "(admin token from the configuration)"
