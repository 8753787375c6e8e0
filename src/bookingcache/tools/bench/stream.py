"""``bookingcache bench stream``: many change-stream clients on one service process.

One ``bookingcache serve`` process (SQLite, embedded worker) holds a tenant of ``--rooms`` rooms
in one building, ``--rooms-per-floor`` to a floor. This process, apart from the server, opens
``--clients`` streams (lean raw-socket clients, ``tools.bench.sse``), each following one floor
(``?building=...&floor=N``, the floors taken in turn), and once they have their snapshots it
changes rooms at ``--rate`` a second for ``--duration`` seconds: each change is a signed relay
call (the tenant's source is ``push``) whose window gives the room a meeting running now with a
new title, so every change alters the room's state. It reports:

* delivery latency: from just before a change's relay call to the arrival of its ``room`` event
  at each client following the room's floor, p50/p99 over every (change, client);
* ``undelivered``: (change, client) pairs whose event had not arrived ``--settle`` seconds after
  the last change, ``starved_clients`` the clients with any, ``resets`` the resets received;
* the server's CPU (user + system) per delivered event over the changes (it includes the relay
  calls' intake and writes), and its resident memory before the clients connected, with them
  connected, and at its peak;
* the stream's own share of that CPU: before the clients connect, the same changes run for
  ``--baseline`` seconds with nobody listening, which gives the server's CPU per change without
  the stream (intake, the worker's writes, the read model); ``stream_cpu_us_per_event`` is the
  CPU over the changes less that much per change, divided by the events delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import resource
import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bookingcache.contract.signing import sign_request
from bookingcache.settings import new_secrets_key
from bookingcache.tools.bench.http import (
    BenchError,
    Server,
    paced,
    percentile,
    report,
    running_server,
)
from bookingcache.tools.bench.sse import OnEvent, StreamClient

UTC = dt.UTC
TENANT = "bench-stream"
BUILDING = "HQ"
CONNECT_CONCURRENCY = 50
_BASELINE_SETTLE_S = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench stream", description=__doc__)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--rooms-per-floor", type=int, default=25)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of changes")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait after")
    parser.add_argument(
        "--baseline",
        type=float,
        default=10.0,
        help="seconds of changes with no client first, for the stream's share of the CPU (0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _mailbox(index: int) -> str:
    return f"room-{index:04d}@bench.example"


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Bench:
    def __init__(self, args: argparse.Namespace, server: Server, admin: str) -> None:
        self.args = args
        self.server = server
        self.base = f"http://{server.host}:{server.port}"
        self.admin = admin
        self.secret = ""
        self.per_floor: int = args.rooms_per_floor
        self.floors = max(1, -(-args.rooms // self.per_floor))
        # title -> (room index, sent); (title, client) -> arrival
        self.sent: dict[str, tuple[int, float]] = {}
        self.arrivals: dict[tuple[str, int], float] = {}
        self.resets = 0
        self.failures = 0
        self.arrived = asyncio.Event()

    def floor_of(self, room: int) -> int:
        return room // self.per_floor

    async def prepare(self, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.admin}"}
        created = await client.post(
            "/v1/tenants",
            headers=headers,
            json={"id": TENANT, "name": "Stream bench", "event_source": "push"},
        )
        if created.status_code != 201:
            raise BenchError(f"creating the tenant failed: {created.text[:300]}")
        self.secret = created.json()["secrets"]["signing_secret"]
        rooms = [
            {
                "room_id": f"room-{index:04d}",
                "mailbox": _mailbox(index),
                "name": f"Room {index:04d}",
                "building": BUILDING,
                "floor": str(self.floor_of(index)),
            }
            for index in range(self.args.rooms)
        ]
        imported = await client.post(
            f"/v1/tenants/{TENANT}/rooms:import", headers=headers, json={"rooms": rooms}
        )
        if imported.status_code != 200:
            raise BenchError(f"importing rooms failed: {imported.text[:300]}")
        # Every calendar synced once (free), so that no room reads as unknown.
        for start in range(0, self.args.rooms, 100):
            batch = range(start, min(start + 100, self.args.rooms))
            await self.push(client, [(index, None) for index in batch])

    async def push(self, client: httpx.AsyncClient, rooms: list[tuple[int, str | None]]) -> None:
        """One signed relay call: each room's window now, with a meeting titled ``title``
        running now (None: no meeting)."""
        now = dt.datetime.now(UTC)
        windows = []
        for index, title in rooms:
            events = []
            if title is not None:
                events.append(
                    {
                        "id": f"bench-{index}",
                        "start": _iso(now - dt.timedelta(minutes=5)),
                        "end": _iso(now + dt.timedelta(hours=1)),
                        "isAllDay": False,
                        "showAs": "busy",
                        "isCancelled": False,
                        "subject": title,
                        "sensitivity": "normal",
                        "type": "singleInstance",
                        "seriesMasterId": None,
                    }
                )
            windows.append(
                {
                    "mailbox": _mailbox(index),
                    "start": _iso(now - dt.timedelta(days=1)),
                    "end": _iso(now + dt.timedelta(days=7)),
                    "events": events,
                }
            )
        body = json.dumps({"changes": [], "lifecycle": [], "resync": [], "windows": windows})
        request = client.build_request(
            "POST",
            f"/v1/tenants/{TENANT}/notifications",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        sign_request(request, secrets=[self.secret], now=now)
        response = await client.send(request)
        if response.status_code != 202:
            raise BenchError(f"a relay call answered {response.status_code}: {response.text[:200]}")

    def on_event(self, client: int) -> OnEvent:
        def handle(event: str, data: bytes, _id: str | None, arrived: float) -> None:
            if event == "reset":
                self.resets += 1
                return
            if event != "room":
                return
            current = json.loads(data)["current"]
            if current is not None and current["title"] in self.sent:
                self.arrivals.setdefault((current["title"], client), arrived)
                self.arrived.set()

        return handle

    async def change(self, client: httpx.AsyncClient, number: int, room: int) -> None:
        title = f"change-{number}"
        self.sent[title] = (room, time.perf_counter())
        try:
            await self.push(client, [(room, title)])
        except (BenchError, httpx.HTTPError):
            self.failures += 1
            del self.sent[title]

    async def drive(self, client: httpx.AsyncClient) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async for number in paced(self.args.rate, self.args.duration):
            room = (number * 7919) % self.args.rooms  # every room in turn, floors mixed
            task = asyncio.create_task(self.change(client, number, room))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def baseline(self, client: httpx.AsyncClient) -> tuple[float, int]:
        """The same kind of changes with no client connected: the server's CPU seconds and the
        changes made (their titles are no client's concern)."""
        tasks: set[asyncio.Task[None]] = set()
        cpu = self.server.cpu_s()
        made = 0
        async for number in paced(self.args.rate, self.args.baseline):
            made = number + 1
            room = (number * 7919) % self.args.rooms
            task = asyncio.create_task(self.push(client, [(room, f"baseline-{number}")]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        await asyncio.sleep(_BASELINE_SETTLE_S)  # the embedded worker's writes of the last ones
        return self.server.cpu_s() - cpu, made

    def expected(self, floor_clients: dict[int, list[int]]) -> int:
        # Fewer clients than floors leaves some floors unfollowed: nobody awaits their changes.
        floors = (self.floor_of(room) for room, _ in self.sent.values())
        return sum(len(floor_clients.get(floor, ())) for floor in floors)

    async def run(self) -> dict[str, Any]:
        args = self.args
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as client:
            await self.prepare(client)
            base_cpu, base_changes = 0.0, 0
            if args.baseline > 0:
                base_cpu, base_changes = await self.baseline(client)
            rss_before, _ = self.server.rss_mb()
            floor_clients: dict[int, list[int]] = {}
            streams: list[StreamClient] = []
            for number in range(args.clients):
                floor = number % self.floors
                floor_clients.setdefault(floor, []).append(number)
                target = f"/v1/tenants/{TENANT}/stream?building={BUILDING}&floor={floor}"
                streams.append(StreamClient(self.base, target, self.admin, self.on_event(number)))
            readers: list[asyncio.Task[None]] = []
            try:
                for start in range(0, len(streams), CONNECT_CONCURRENCY):
                    batch = streams[start : start + CONNECT_CONCURRENCY]
                    readers += [asyncio.create_task(stream.run()) for stream in batch]
                    waits = (stream.connected.wait() for stream in batch)
                    await asyncio.wait_for(asyncio.gather(*waits), 60)
                for reader in readers:
                    if reader.done():
                        reader.result()
                rss_connected, _ = self.server.rss_mb()
                cpu = self.server.cpu_s()
                await self.drive(client)
                deadline = time.perf_counter() + args.settle
                while len(self.arrivals) < self.expected(floor_clients):
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self.arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.arrived.wait(), remaining)
                cpu_used = self.server.cpu_s() - cpu
                rss_end, rss_peak = self.server.rss_mb()
            finally:
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        latencies = [
            (arrived - self.sent[title][1]) * 1000
            for (title, _client), arrived in self.arrivals.items()
        ]
        expected = self.expected(floor_clients)
        got: dict[int, int] = {}
        for _title, number in self.arrivals:
            got[number] = got.get(number, 0) + 1
        starved = 0
        for floor, numbers in floor_clients.items():
            wanted = sum(1 for room, _ in self.sent.values() if self.floor_of(room) == floor)
            starved += sum(1 for number in numbers if got.get(number, 0) < wanted)
        if not latencies:
            raise BenchError("no event was delivered")
        deliveries = max(1, len(self.arrivals))
        stream_cpu: dict[str, Any] = {}
        if base_changes:
            per_change = base_cpu / base_changes
            stream_cpu = {
                "server_cpu_us_per_change_without_clients": round(per_change * 1e6, 1),
                "stream_cpu_us_per_event": round(
                    (cpu_used - per_change * len(self.sent)) * 1e6 / deliveries, 1
                ),
            }
        return {
            "benchmark": "stream",
            "rooms": args.rooms,
            "rooms_per_floor": args.rooms_per_floor,
            "clients": args.clients,
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "changes": len(self.sent),
            "change_failures": self.failures,
            "deliveries": len(self.arrivals),
            "undelivered": expected - len(self.arrivals),
            "starved_clients": starved,
            "resets": self.resets,
            "delivery_p50_ms": round(percentile(latencies, 0.50), 1),
            "delivery_p99_ms": round(percentile(latencies, 0.99), 1),
            "delivery_max_ms": round(max(latencies), 1),
            "server_cpu_us_per_event": round(cpu_used * 1e6 / deliveries, 1),
            **stream_cpu,
            "rss_before_clients_mb": rss_before,
            "rss_connected_mb": rss_connected,
            "rss_end_mb": rss_end,
            "rss_peak_mb": rss_peak,
            "rss_growth_mb": round(rss_peak - rss_before, 1),
        }


def _raise_fd_limit(clients: int) -> None:
    """Room for the clients' sockets here and in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients + 512
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise BenchError(f"the file-descriptor limit ({hard}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    admin = secrets.token_urlsafe(32)
    try:
        _raise_fd_limit(args.clients)
        with tempfile.TemporaryDirectory(prefix="bookingcache-stream-") as scratch:
            data_dir = Path(scratch)
            url = f"sqlite:///{data_dir / 'bench.db'}"
            with running_server(
                secrets_key=new_secrets_key(),
                data_dir=data_dir,
                database_url=url,
                admin_token=admin,
            ) as server:
                result = asyncio.run(Bench(args, server, admin).run())
    except BenchError as exc:
        print(f"bookingcache bench stream: {exc}")
        return 1
    report(result, as_json=args.json)
    return 0
