"""An ASGI app served by uvicorn on a real loopback port, in a thread with its own loop
(what Graph, or the emulator, needs in order to call the connector's relay)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn


class ServerThread:
    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="connector-server", daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        loop.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        waiter = threading.Event()
        for _ in range(500):
            if self._server.started or not self._thread.is_alive():
                break
            waiter.wait(0.01)
        if not self._server.started:
            raise RuntimeError("server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
