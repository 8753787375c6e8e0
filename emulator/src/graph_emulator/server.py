"""Serving the emulator on a real socket: the command line uses ``serve``; tests and
benchmarks use ``BackgroundEmulator``, which runs the same server in a thread."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from graph_emulator.app import create_app
from graph_emulator.auth import App
from graph_emulator.state import EmulatorState
from graph_emulator.tls import write_self_signed


@dataclass
class Listening:
    host: str
    port: int
    scheme: str
    cert_path: Path | None

    @property
    def root(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on connections whose socket says so,
    # and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def startup_info(
    state: EmulatorState, listening: Listening, apps: dict[str, App]
) -> dict[str, Any]:
    """The one JSON line the command prints when it is ready."""
    main = apps.get("full") or next(iter(apps.values()), None)
    return {
        "base_url": f"{listening.root}/v1.0",
        "authority": f"{listening.root}/{state.tenant_id}",
        "control_url": f"{listening.root}/_emulator",
        "tenant_id": state.tenant_id,
        "client_id": main.client_id if main else None,
        "client_secret": main.client_secret if main else None,
        "cert_path": str(listening.cert_path) if listening.cert_path else None,
        "apps": {name: app.public_json() for name, app in apps.items()},
        "mailboxes": [
            {
                "id": m.id,
                "upn": m.upn,
                "display_name": m.display_name,
                "building": m.building,
                "floor": m.floor,
                "capacity": m.capacity,
                "time_zone": m.time_zone,
                "booking_mode": m.booking_mode,
            }
            for m in sorted(state.directory.rooms(), key=lambda m: m.upn)
        ],
    }


class EmulatorServer(uvicorn.Server):
    """uvicorn's server with one change: SIGTERM and SIGINT end it gracefully and that is all.

    uvicorn raises a captured signal again once it has shut down, so the process would die of
    it (exit 143 for SIGTERM, a ``KeyboardInterrupt`` for Ctrl-C) before any clean-up after
    ``run`` could happen. Here ``stopped_by`` records the signal and ``run`` simply returns.
    """

    stopped_by: int | None = None

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: object) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        # A second Ctrl-C stops waiting for open connections, as with plain uvicorn.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


@dataclass
class TlsFiles:
    """The certificate and key the emulator wrote, and what to remove when it stops: the whole
    folder when the emulator made it, otherwise only the two files."""

    directory: Path
    created_directory: bool

    @classmethod
    def prepare(cls, directory: Path | None) -> TlsFiles:
        if directory is None:
            return cls(Path(tempfile.mkdtemp(prefix="graph-emulator-")), created_directory=True)
        return cls(directory, created_directory=not directory.exists())

    def remove(self) -> None:
        if self.created_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        for name in ("cert.pem", "key.pem"):
            (self.directory / name).unlink(missing_ok=True)


def make_server(
    state: EmulatorState, *, host: str, port: int, tls_dir: Path | None
) -> tuple[EmulatorServer, socket.socket, Listening]:
    sock = bind(host, port)
    actual_port = sock.getsockname()[1]
    cert_path = key_path = None
    if tls_dir is not None:
        cert_path, key_path = write_self_signed(tls_dir, now=dt.datetime.now(dt.UTC))
    config = uvicorn.Config(
        create_app(state),
        log_level="warning",
        ssl_certfile=str(cert_path) if cert_path else None,
        ssl_keyfile=str(key_path) if key_path else None,
        lifespan="on",
        access_log=False,
        # Keep-alive clients must not hold a stopping emulator for long.
        timeout_graceful_shutdown=2,
    )
    listening = Listening(host, actual_port, "https" if tls_dir else "http", cert_path)
    return EmulatorServer(config), sock, listening


class BackgroundEmulator:
    """The emulator on a real loopback port, in a thread with its own event loop."""

    def __init__(self, state: EmulatorState, *, tls_dir: Path | None = None) -> None:
        self.state = state
        self._server, self._sock, self.listening = make_server(
            state, host="127.0.0.1", port=0, tls_dir=tls_dir
        )
        self._thread = threading.Thread(target=self._run, name="graph-emulator", daemon=True)

    def _run(self) -> None:
        # uvicorn picks the fastest loop available (uvloop when installed).
        self._server.run(sockets=[self._sock])

    def __enter__(self) -> BackgroundEmulator:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(500):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.01)
        if not self._server.started:
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    @property
    def root(self) -> str:
        return self.listening.root

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1.0"

    @property
    def authority(self) -> str:
        return f"{self.root}/{self.state.tenant_id}"
