"""Real processes and servers for the end-to-end intake tests: ``bookingcache serve`` as a
subprocess, and a signed test connector (the basic-events endpoint of the service<->connector
contract) on loopback whose answers the test controls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bookingcache.clock import SystemClock
from bookingcache.intake.errors import BadSignature
from bookingcache.intake.signing import SignatureVerifier


class TruthConnector:
    """Answers ``GET /v1/calendars/{mailbox}/events`` with ``truth[mailbox]`` after checking
    the contract signature; counts reads and refusals."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.truth: dict[str, list[dict[str, Any]]] = {}
        self.reads = 0
        self.refused = 0
        self._verifier = SignatureVerifier(clock=SystemClock())

    async def _events(self, request: Request) -> JSONResponse:
        raw_path = request.scope["raw_path"].decode("latin-1")
        query = request.scope["query_string"].decode("latin-1")
        target = f"{raw_path}?{query}" if query else raw_path
        try:
            assert self.secret is not None
            self._verifier.verify(
                tenant_id="service",
                secret=self.secret,
                method="GET",
                path_with_query=target,
                headers=request.headers,
                body=b"",
            )
        except BadSignature as exc:
            self.refused += 1
            return JSONResponse({"detail": str(exc)}, status_code=401)
        self.reads += 1
        mailbox = request.path_params["mailbox"]
        return JSONResponse(
            {
                "mailbox": mailbox,
                "start": request.query_params["start"],
                "end": request.query_params["end"],
                "events": self.truth.get(mailbox, []),
            }
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/calendars/{mailbox}/events", self._events)])


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` on a loopback port in a background thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test connector did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class ServiceProcess:
    """``bookingcache serve`` in a subprocess on a free loopback port."""

    def __init__(self, data_dir: Path, env: dict[str, str], *, log: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        self.env = {**os.environ, **env}
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def start(self, timeout_s: float = 20.0) -> str:
        with self.log.open("ab") as log:
            return await self._start(log, timeout_s)

    async def _start(self, log: Any, timeout_s: float) -> str:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bookingcache.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("bookingcache serve exited before listening")
                if "listening on " in line:
                    self.base_url = line.split("listening on ", 1)[1].split()[0]
                    return self.base_url

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
