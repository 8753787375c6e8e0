"""``bookingcache bench intake``: Graph's notification webhook (Alternative 1) against a bare
Starlette handler that only parses the same JSON and answers 202.

Both servers run as one uvicorn process each with the same settings on loopback, side by side,
and take turns under the load in slices of ``--slice-seconds`` (baseline, then service, until
``--seconds`` each), so that what else the machine does falls on both alike. The same load
generator (raw keep-alive HTTP/1.1, ``--connections`` connections, in this process) sends both
the same kind of payload: a Graph ``changeNotificationCollection`` of ``--batch`` change
notifications with valid ``clientState``s for subscriptions of ``--rooms`` room calendars, each
notification naming a unique resource. The service is killed (SIGKILL) at the end of its last slice,
with requests in flight; then every notification answered 202 is looked up in the inbox's
stored batches (``durable``). The service stores in SQLite, or with ``--database-url`` in a
database of its own on that PostgreSQL server.

``targets_met`` is the floor against regressions: ``ratio`` at least 0.28 with the embedded
worker and 0.36 with ``--no-worker``, ``p99_ms`` at most 20, and nothing lost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bookingcache.clock import SystemClock
from bookingcache.domain.tenancy import EventSource, Room, Tenant, TenantSecrets
from bookingcache.errors import InvalidInput
from bookingcache.settings import new_secrets_key
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.pgserver import create_database, drop_database
from bookingcache.store.sql.store import open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from bookingcache.tools.bench.http import (
    BenchError,
    Connection,
    percentile,
    report,
    request_bytes,
    server,
)
from bookingcache.tools.processes import serve_command

TENANT = "bench"
CLIENT_STATE = "bench-client-state-0123456789"
# The floor against regressions (docs/benchmarks.md): what group commit gives, less the noise.
RATIO_FLOOR_EMBEDDED = 0.28
RATIO_FLOOR_NO_WORKER = 0.36
P99_LIMIT_MS = 20.0
# The two servers take turns in slices of the measured time (``--slice-seconds``); each turn
# after the first starts with this much unmeasured load, and each ends with this much rest.
SLICE_WARMUP_S = 0.3
SLICE_SETTLE_S = 0.5
_LISTENING = re.compile(r"listening on http://(?P<host>[^:\s]+):(?P<port>\d+)")

# The key that seals the bench database's secrets, given to the service it starts too.
SECRETS_KEY = new_secrets_key()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench intake", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time first")
    parser.add_argument(
        "--slice-seconds",
        type=float,
        default=2.0,
        help="the servers take turns under the load in slices of about this long",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2, help="notifications per request")
    parser.add_argument("--rooms", type=int, default=100, help="subscribed room calendars")
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="run the service without its embedded refresh worker (intake alone)",
    )
    parser.add_argument("--data-dir", help="keep the service's database here (default: temp)")
    parser.add_argument(
        "--database-url",
        help="measure the service on this PostgreSQL server (postgresql://...) instead of "
        "SQLite: a database of its own is created there and dropped afterwards",
    )
    return parser


def subscription_id(room: int) -> str:
    return f"5a6b7c8d-9e0f-4a1b-8c2d-{room:012d}"


def mailbox(room: int) -> str:
    return f"room-{room:04d}@bench.example"


async def _prepare(url: str, rooms: int) -> None:
    clock = SystemClock()
    store = await open_store(url, box=SecretBox([SECRETS_KEY]), migrate=True, clock=clock)
    try:
        # A push tenant: its refreshes have nothing to read, so the worker only does its
        # bookkeeping and no outside server is involved.
        await store.create_tenant(
            Tenant(id=TENANT, name="Bench", event_source=EventSource.PUSH),
            TenantSecrets(
                signing_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
                read_token=f"{TENANT}.{secrets.token_urlsafe(24)}",
            ),
        )
        await store.import_rooms(
            TENANT,
            [
                Room(tenant_id=TENANT, room_id=f"r{i}", mailbox=mailbox(i), name=f"Room {i}")
                for i in range(rooms)
            ],
        )
        registry = SqlSubscriptions(store, clock=clock)
        for i in range(rooms):
            await registry.record(TENANT, mailbox(i), subscription_id(i), expires_at=None)
        await registry.rotate_client_state(TENANT, CLIENT_STATE)
    finally:
        await store.close()


class Payloads:
    """Request bytes of equal length, each notification with its own resource."""

    def __init__(self, *, batch: int, rooms: int) -> None:
        self.batch = batch
        self.rooms = rooms
        self.counter = 0

    def next(self) -> tuple[bytes, list[str]]:
        notes = []
        resources = []
        for _ in range(self.batch):
            number = self.counter
            self.counter += 1
            resource = f"Users/{mailbox(number % self.rooms)}/Events/bench-{number:010d}"
            resources.append(resource)
            notes.append(
                {
                    "subscriptionId": subscription_id(number % self.rooms),
                    "subscriptionExpirationDateTime": "2026-11-30T08:00:00+00:00",
                    "changeType": "updated",
                    "resource": resource,
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Event",
                        "@odata.id": resource,
                        "@odata.etag": 'W/"DwAAABYAAADm6rLxQ1VbR5Z2ZEXm7pcqAAAFk1sm"',
                        "id": f"bench-{number:010d}",
                    },
                    "clientState": CLIENT_STATE,
                    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
                }
            )
        body = json.dumps({"value": notes}).encode()
        request = request_bytes(
            "POST",
            f"/graph/notifications/{TENANT}",
            headers={"Content-Type": "application/json"},
            body=body,
        )
        return request, resources


@dataclass
class Run:
    answers: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # CPU seconds the server process used during the measured time.
    cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.answers / self.elapsed_s if self.elapsed_s else 0.0

    def add(self, part: Run) -> None:
        """Count a further slice of the same server's measured time."""
        self.answers += part.answers
        self.elapsed_s += part.elapsed_s
        self.latencies_ms.extend(part.latencies_ms)
        self.accepted.extend(part.accepted)
        self.cpu_s += part.cpu_s

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.answers * 1e6 if self.answers else 0.0


async def _load(
    host: str,
    port: int,
    *,
    connections_wanted: int,
    warmup_s: float,
    seconds: float,
    payloads: Payloads,
    cpu_s: Callable[[], float],
    kill: Callable[[], None] | None = None,
) -> Run:
    """Keep ``connections_wanted`` connections busy for the warm-up and the measured time.
    With ``kill``, the server is killed at the end while every connection has a request out;
    those requests are never answered, and count for nothing. ``cpu_s`` reads the server's
    CPU time, taken at the start and the end of the measured time."""
    connections = [await Connection.open(host, port) for _ in range(connections_wanted)]
    run = Run()
    measuring = False
    killed = False
    stop_at = time.perf_counter() + warmup_s + seconds

    async def work(connection: Connection) -> None:
        while (kill is not None or time.perf_counter() < stop_at) and not run.failures:
            request, resources = payloads.next()
            started = time.perf_counter()
            try:
                status, body = await connection.exchange(request)
            except (OSError, asyncio.IncompleteReadError):
                if killed:
                    return
                raise
            if status != 202:
                run.failures.append(f"answer {status}: {body[:300]!r}")
                return
            run.accepted.extend(resources)
            if measuring:
                run.latencies_ms.append((time.perf_counter() - started) * 1000)
                run.answers += 1

    tasks = [asyncio.create_task(work(c)) for c in connections]
    try:
        await asyncio.sleep(warmup_s)
        measuring = True
        began = time.perf_counter()
        cpu_began = cpu_s()
        if kill is not None:
            await asyncio.sleep(seconds)
            run.elapsed_s = time.perf_counter() - began
            run.cpu_s = cpu_s() - cpu_began
            measuring = False
            killed = True
            kill()
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*tasks)
            run.elapsed_s = time.perf_counter() - began
            run.cpu_s = cpu_s() - cpu_began
    finally:
        for connection in connections:
            await connection.close()
    if run.failures:
        raise BenchError(run.failures[0])
    return run


async def _stored_resources(url: str) -> set[str]:
    store = await open_store(url, box=SecretBox([SECRETS_KEY]), migrate=False)
    try:
        jobs = SqlJobQueue(store, clock=SystemClock())
        stored = await SqlInbox(store, jobs=jobs, clock=SystemClock()).notifications(TENANT)
        return {entry["resource"] for entry in stored if "resource" in entry}
    finally:
        await store.close()


@contextlib.contextmanager
def _database(args: argparse.Namespace, data_dir: Path) -> Iterator[str]:
    """The service's database URL: SQLite in ``data_dir``, or a new database on the
    PostgreSQL server of ``--database-url``, dropped afterwards."""
    if not args.database_url:
        yield f"sqlite:///{data_dir / 'bookingcache.db'}"
        return
    name = f"bookingcache_bench_intake_{secrets.token_hex(4)}"
    try:
        url = asyncio.run(create_database(args.database_url, name))
    except InvalidInput as exc:
        raise BenchError("--database-url must name a PostgreSQL server (postgresql://...)") from exc
    try:
        yield url
    finally:
        asyncio.run(drop_database(args.database_url, name))


def _measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    with _database(args, data_dir) as url:
        return _measure_on(args, data_dir, url)


def _measure_on(args: argparse.Namespace, data_dir: Path, url: str) -> dict[str, Any]:
    asyncio.run(_prepare(url, args.rooms))
    env = {
        **os.environ,
        "BOOKINGCACHE_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    baseline_command = [python, "-m", "bookingcache.tools.bench.intake_baseline"]
    service_command = serve_command(
        data_dir, "--database-url", url, *(["--no-worker"] if args.no_worker else [])
    )
    payloads = Payloads(batch=args.batch, rooms=args.rooms)
    baseline, service = Run(), Run()
    slices = max(1, round(args.seconds / args.slice_seconds))
    with (
        server(baseline_command, env=env) as baseline_server,
        server(service_command, env=env) as service_server,
    ):
        # Both servers run side by side and take turns under the load, slice by slice, so that
        # the machine's other load (a neighbour on a shared host, a burst of I/O) falls on both
        # alike instead of on whichever ran first.
        for number in range(slices):
            first, last = number == 0, number == slices - 1
            for side, running, total in (
                ("baseline", baseline_server, baseline),
                ("service", service_server, service),
            ):
                # Killed in the middle of the load, not stopped: what was answered 202 must
                # already be in the database.
                kill = service_server.child.kill if side == "service" and last else None
                total.add(
                    asyncio.run(
                        _load(
                            running.host,
                            running.port,
                            connections_wanted=args.connections,
                            warmup_s=args.warmup if first else min(args.warmup, SLICE_WARMUP_S),
                            seconds=args.seconds / slices,
                            payloads=payloads,
                            cpu_s=running.cpu_s,
                            kill=kill,
                        )
                    )
                )
                if not (side == "service" and last):
                    # What the last slice left behind (the worker's refreshes of what it
                    # accepted) settles before the other server's turn.
                    time.sleep(SLICE_SETTLE_S)
    stored = asyncio.run(_stored_resources(url))
    lost = sum(1 for resource in service.accepted if resource not in stored)
    ratio = service.rps / baseline.rps if baseline.rps else 0.0
    p99_ms = percentile(service.latencies_ms, 0.99)
    floor = RATIO_FLOOR_NO_WORKER if args.no_worker else RATIO_FLOOR_EMBEDDED
    return {
        "baseline_rps": round(baseline.rps, 1),
        "service_rps": round(service.rps, 1),
        "ratio": round(ratio, 3),
        "p99_ms": round(p99_ms, 2),
        "p50_ms": round(percentile(service.latencies_ms, 0.50), 2),
        "baseline_p99_ms": round(percentile(baseline.latencies_ms, 0.99), 2),
        "service_cpu_us_per_request": round(service.cpu_us_per_request, 1),
        "baseline_cpu_us_per_request": round(baseline.cpu_us_per_request, 1),
        "notifications_per_request": args.batch,
        "connections": args.connections,
        "seconds": args.seconds,
        "slices": slices,
        "worker": not args.no_worker,
        "database": "postgresql" if args.database_url else "sqlite",
        "accepted_notifications": len(service.accepted),
        "lost_notifications": lost,
        "durable": lost == 0 and bool(service.accepted),
        "ratio_floor": floor,
        "targets_met": ratio >= floor and p99_ms <= P99_LIMIT_MS and lost == 0,
    }


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if (
        args.connections < 1
        or args.batch < 1
        or args.rooms < 1
        or args.seconds <= 0
        or args.slice_seconds <= 0
    ):
        print("bookingcache bench intake: counts and --seconds must be positive", file=sys.stderr)
        return 2
    try:
        if args.data_dir:
            data_dir = Path(args.data_dir)
            data_dir.mkdir(parents=True, exist_ok=True)
            if (data_dir / "bookingcache.db").exists():
                print(
                    "bookingcache bench intake: --data-dir must not hold a database",
                    file=sys.stderr,
                )
                return 2
            result = _measure(args, data_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
                result = _measure(args, Path(tmp))
    except BenchError as exc:
        print(f"bookingcache bench intake: {exc}", file=sys.stderr)
        return 1
    report(result, as_json=args.json)
    return 0 if result["durable"] else 1
