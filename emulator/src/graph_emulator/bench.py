"""Throughput of the emulator with notification fan-out, and the loopback pieces it uses.

``python -m graph_emulator.bench --json`` (or ``graph-emulator-bench``) starts the emulator in a
child process on loopback with N room mailboxes, a loopback receiver in this process, creates one
subscription per room (the real validation handshake), then books rooms through the control API
as fast as a fixed number of concurrent clients can, for a fixed duration. It reports mutations
per second, notifications delivered per second and the p99 delay from a booking request to its
``created`` notification.

``LoopbackReceiver`` (an ASGI app that answers handshakes and acknowledges notifications with
202) and ``serve`` (run an ASGI app on a free loopback port) are also what the tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
HandshakeMode = Literal["echo", "encoded", "wrong", "json", "slow", "error"]


@dataclass
class LoopbackReceiver:
    """A webhook endpoint on loopback: echoes validation tokens, answers notifications with
    ``status`` (after ``delay_s``) and keeps what it received."""

    status: int = 202
    statuses: dict[str, int] = field(default_factory=dict)  # per path, overriding ``status``
    delay_s: float = 0.0
    handshake: HandshakeMode = "echo"
    handshake_delay_s: float = 0.0
    keep: bool = True
    posts: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    validations: list[tuple[str, str]] = field(default_factory=list)
    received: int = 0
    first_arrival: dict[str, float] = field(default_factory=dict)
    arrived: asyncio.Event | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        return [item for _, batch in self.posts for item in batch]

    def items_at(self, path: str) -> list[dict[str, Any]]:
        return [item for p, batch in self.posts if p == path for item in batch]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the receiver did not get what was expected in time")
            await asyncio.sleep(0.01)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "validationToken" in query:
            token = query["validationToken"][0]
            self.validations.append((scope["path"], token))
            await self._handshake(send, token)
            return
        arrival = time.monotonic()
        try:
            items = json.loads(body).get("value", [])
        except (ValueError, AttributeError):
            items = []
        self.received += len(items)
        if self.keep:
            self.posts.append((scope["path"], items))
        for item in items:
            event_id = (item.get("resourceData") or {}).get("id")
            if item.get("changeType") == "created" and event_id not in self.first_arrival:
                self.first_arrival[str(event_id)] = arrival
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await _respond(send, self.statuses.get(scope["path"], self.status), b"", "text/plain")

    async def _handshake(self, send: Send, token: str) -> None:
        if self.handshake_delay_s or self.handshake == "slow":
            await asyncio.sleep(self.handshake_delay_s or 30.0)
        if self.handshake == "error":
            await _respond(send, 500, b"", "text/plain")
        elif self.handshake == "json":
            await _respond(send, 200, json.dumps({"token": token}).encode(), "application/json")
        elif self.handshake == "wrong":
            await _respond(send, 200, b"not-the-token", "text/plain")
        elif self.handshake == "encoded":
            from urllib.parse import quote

            await _respond(send, 200, quote(token, safe="").encode(), "text/plain")
        else:
            await _respond(send, 200, token.encode(), "text/plain; charset=utf-8")


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # the host process keeps its own signal handling
        yield


@contextlib.asynccontextmanager
async def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port in this event loop (HTTPS with a certificate and
    key); yields its base URL."""
    config = uvicorn.Config(
        app,
        host=host,
        port=0,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        # An idle keep-alive client must not hold a stopping server for long.
        timeout_graceful_shutdown=1,
    )
    server = _QuietServer(config)
    scheme = "https" if certfile else "http"
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"{scheme}://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


# -- the benchmark ---------------------------------------------------------------------------


def _emulator_process(rooms: int, ports: Any) -> None:
    """Child process: an emulator tenant with ``rooms`` rooms and one app, on a free port."""
    from graph_emulator.app import create_app
    from graph_emulator.auth import READ, App
    from graph_emulator.config import EmulatorConfig
    from graph_emulator.directory import Mailbox
    from graph_emulator.state import new_state

    state = new_state(EmulatorConfig(allow_http_notifications=True), seed=11)
    for n in range(rooms):
        state.directory.add(
            Mailbox(
                id=str(uuid.UUID(int=n + 1, version=4)),
                upn=f"room-{n:03d}@bench.example",
                display_name=f"Room {n:03d}",
                is_room=True,
                time_zone="Europe/Berlin",
            )
        )
    secret = "bench-secret"  # noqa: S105 - a throwaway tenant on loopback
    state.apps.add(
        App(client_id="bench-app", client_secret=secret, display_name="bench", roles={READ})
    )

    async def main() -> None:
        async with serve(create_app(state)) as url:
            ports.put(url)
            await asyncio.Event().wait()  # until the parent terminates this process

    asyncio.run(main())


async def _run(rooms: int, duration_s: float, concurrency: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    child = ctx.Process(target=_emulator_process, args=(rooms, ports), daemon=True)
    child.start()
    receiver = LoopbackReceiver(keep=False)
    try:
        base = await asyncio.get_running_loop().run_in_executor(None, ports.get, True, 60)
        async with (
            serve(receiver) as receiver_url,
            httpx.AsyncClient(
                base_url=base, timeout=30, limits=httpx.Limits(max_connections=concurrency + 4)
            ) as client,
        ):
            state = (await client.get("/_emulator/clock")).json()
            token_tenant = await _tenant(client)
            token = (
                await client.post(
                    f"/{token_tenant}/oauth2/v2.0/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": "bench-app",
                        "client_secret": "bench-secret",
                        "scope": "https://graph.microsoft.com/.default",
                    },
                )
            ).json()["access_token"]
            expiry = dt.datetime.fromisoformat(state["now"]) + dt.timedelta(days=2)
            for n in range(rooms):
                r = await client.post(
                    "/v1.0/subscriptions",
                    headers={"Authorization": f"Bearer {token}"},
                    json={
                        "changeType": "created,updated,deleted",
                        "notificationUrl": f"{receiver_url}/notify",
                        "resource": f"users/room-{n:03d}@bench.example/events",
                        "expirationDateTime": expiry.isoformat(),
                        "clientState": f"bench-{n}",
                    },
                )
                r.raise_for_status()
            cpu_before = _cpu_s(child.pid), time.process_time()
            result = await _drive(client, receiver, rooms, duration_s, concurrency, expiry)
            emulator_cpu_s = _cpu_s(child.pid) - cpu_before[0]
            result["emulator_cpu_s"] = round(emulator_cpu_s, 2)
            if emulator_cpu_s > 0 and result["mutations"]:
                # What one core fully given to the emulator sustains, machine load aside.
                per_mutation_s = emulator_cpu_s / result["mutations"]
                result["emulator_cpu_ms_per_mutation"] = round(per_mutation_s * 1000, 3)
                result["mutations_per_emulator_cpu_s"] = round(1 / per_mutation_s, 1)
            result["load_average_1m"] = round(os.getloadavg()[0], 2)
            result["driver_and_receiver_cpu_s"] = round(time.process_time() - cpu_before[1], 2)
            return result
    finally:
        child.terminate()
        child.join(10)


class _Connection:
    """A lean keep-alive HTTP/1.1 client, so that the load generator spends little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _cpu_s(pid: int | None) -> float:
    """CPU seconds a process has used (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def _tenant(client: httpx.AsyncClient) -> str:
    """The tenant id, from the OpenID configuration of the ``organizations`` alias."""
    config = (await client.get("/organizations/v2.0/.well-known/openid-configuration")).json()
    return str(config["token_endpoint"]).split("/")[-4]


async def _drive(
    client: httpx.AsyncClient,
    receiver: LoopbackReceiver,
    rooms: int,
    duration_s: float,
    concurrency: int,
    base_time: dt.datetime,
) -> dict[str, Any]:
    started_at: dict[str, float] = {}
    done = 0
    failures = 0
    start = time.monotonic()
    stop_at = start + duration_s

    host, _, port = client.base_url.host, None, client.base_url.port

    async def worker(w: int) -> None:
        nonlocal done, failures
        n = w
        connection = await _Connection.open(host, port or 80)
        try:
            while time.monotonic() < stop_at:
                room = f"room-{n % rooms:03d}@bench.example"
                begin = base_time + dt.timedelta(minutes=30 * (n // rooms))
                body = {
                    "organizer": f"user{w}@bench.example",
                    "subject": "bench",
                    "start": begin.isoformat(),
                    "end": (begin + dt.timedelta(minutes=30)).isoformat(),
                }
                sent = time.monotonic()
                status, answer = await connection.post(
                    f"/_emulator/mailboxes/{room}/bookings", json.dumps(body).encode()
                )
                if status == 201:
                    done += 1
                    started_at[str(json.loads(answer)["id"])] = sent
                else:
                    failures += 1
                n += concurrency
        finally:
            connection.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - start
    counters = (await client.get("/_emulator/counters")).json()
    expected = counters.get("notifications_sent", 0) + (await _queued(client))
    drain_deadline = time.monotonic() + 30
    while time.monotonic() < drain_deadline and (await _queued(client)) > 0:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    drained = time.monotonic() - start
    lags = sorted(
        receiver.first_arrival[eid] - sent
        for eid, sent in started_at.items()
        if eid in receiver.first_arrival
    )
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None
    return {
        "rooms": rooms,
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "mutations": done,
        "mutation_failures": failures,
        "mutations_per_s": round(done / elapsed, 1),
        "notifications_received": receiver.received,
        "notifications_expected": expected,
        "notifications_per_s": round(receiver.received / drained, 1),
        "created_notifications_matched": len(lags),
        "p50_created_lag_ms": round(lags[len(lags) // 2] * 1000, 1) if lags else None,
        "p99_created_lag_ms": round(p99 * 1000, 1) if p99 is not None else None,
    }


async def _queued(client: httpx.AsyncClient) -> int:
    return int((await client.get("/_emulator/delivery")).json()["queued"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of mutations")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args.rooms, args.duration, args.concurrency))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>30}: {value}")
    return 0 if result["mutations"] else 1


if __name__ == "__main__":
    sys.exit(main())
