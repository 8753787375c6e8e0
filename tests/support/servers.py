"""ASGI apps served on loopback ports from a thread of the test process, so that real HTTP
clients (the Graph emulator's deliveries, the connector, httpx) reach them over sockets."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def bound_socket(port: int = 0) -> socket.socket:
    """A listening loopback socket on a free port, for an app whose URL must be known before
    it starts (a service that is given its own public URL); on ``port`` when given, for the
    process that replaces one that listened there."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def loopback_url(sock: socket.socket) -> str:
    """The base URL of an app served on ``sock``."""
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def serve_in_thread(app: Any, sock: socket.socket | None = None, **config: Any) -> Iterator[str]:
    """Run ``app`` (its lifespan included) on ``sock`` or a free loopback port; yields its base
    URL and stops it on the way out. ``config``: more ``uvicorn.Config`` arguments."""
    sock = sock or bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="auto", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("a loopback server did not start")
        time.sleep(0.01)
    try:
        yield loopback_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
