"""``bookingcache bench availability``: seed a tenant with N rooms in one building through the
store's ``replace_window``, start one real server process on loopback and measure through HTTP:

* bulk availability of one floor (up to 1,000 rooms) for one day: p50/p99 over sequential
  requests, with the per-room answers reused while valid (the usual case: maps poll) and, as
  ``bulk_uncached_*``, with every request asking something new (each room computed afresh);
* single-room status (default window) in requests per second over concurrent keep-alive
  connections, alternating in rounds with a bare Starlette handler that answers a cached body of
  the same size on the same route (``availability_baseline``, its own uvicorn process with the
  service's server settings): ``single_ratio`` is the service's rate over the bare one's, the
  share of a bare framework's speed the service keeps while authenticating and answering;
* the server's resident memory (``/proc/<pid>/status``) once everything is loaded.

Prints one JSON object (``--json``) or a short text summary.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bookingcache.domain.events import BasicEvent, ShowAs
from bookingcache.domain.tenancy import EventSource, Room, Tenant, TenantSecrets
from bookingcache.settings import new_secrets_key
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.tools.bench.http import (
    BenchError,
    Server,
    percentile,
    report,
    request_bytes,
    running_server,
    throughput,
    timed_requests,
)
from bookingcache.tools.bench.http import server as bench_server

UTC = dt.UTC
BUILDING = "bench-hq"
ROOMS_PER_FLOOR = 1000
DAYS = 7
SEED_CONCURRENCY = 8
# Single-room load alternates between the service and the baseline this many times each, so
# that other work on the machine weighs on both alike.
SINGLE_ROUNDS = 3
# The key that seals the bench database's secrets, given to the service it starts too.
SECRETS_KEY = new_secrets_key()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bookingcache bench availability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rooms", type=int, default=1000, help="rooms to seed (default 1000)")
    parser.add_argument(
        "--events-per-room",
        type=int,
        default=None,
        help="cached events per room over the 7 days (default 140 = 20 a day; 30 from 10000 rooms)",
    )
    parser.add_argument("--bulk-requests", type=int, default=200, help="bulk requests timed")
    parser.add_argument(
        "--single-seconds",
        type=float,
        default=6.0,
        help="single-room load time, each of the service and the baseline (default 6)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="single-room connections")
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _events(room_index: int, count: int, first_day: dt.datetime) -> list[BasicEvent]:
    """``count`` meetings spread evenly over the 7 days from 07:00 UTC, 20 minutes long every
    half hour, with a few tentative ones; rooms differ by a small offset."""
    per_day = max(1, math.ceil(count / DAYS))
    offset = dt.timedelta(minutes=5 * (room_index % 3))
    found: list[BasicEvent] = []
    for number in range(count):
        day, slot = divmod(number, per_day)
        start = first_day + dt.timedelta(days=day, hours=7, minutes=30 * slot) + offset
        found.append(
            BasicEvent(
                id=f"r{room_index}-e{number}",
                start=start,
                end=start + dt.timedelta(minutes=20),
                show_as=ShowAs.TENTATIVE if number % 7 == 3 else ShowAs.BUSY,
                title=f"Meeting {number}",
            )
        )
    return found


async def _seed(
    store: SqlStore, *, tenant_id: str, read_token: str, rooms: int, events_per_room: int
) -> None:
    now = dt.datetime.now(UTC)
    await store.create_tenant(
        Tenant(
            id=tenant_id,
            name="Benchmark",
            event_source=EventSource.PUSH,
            default_time_zone="UTC",
            staleness_bound_s=7 * 24 * 3600,
            created_at=now,
        ),
        TenantSecrets(
            signing_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            read_token=read_token,
        ),
    )
    links = [
        Room(
            tenant_id=tenant_id,
            room_id=f"room-{index:05d}",
            mailbox=f"room-{index:05d}@bench.example",
            name=f"Room {index}",
            building=BUILDING,
            floor=str(index // ROOMS_PER_FLOOR + 1),
        )
        for index in range(rooms)
    ]
    await store.import_rooms(tenant_id, links)
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    window_start, window_end = first_day - dt.timedelta(days=1), first_day + dt.timedelta(days=8)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(rooms):
        queue.put_nowait(index)

    async def writer() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            await store.replace_window(
                tenant_id,
                links[index].mailbox,
                window_start=window_start,
                window_end=window_end,
                events=_events(index, events_per_room, first_day),
                synced_at=dt.datetime.now(UTC),
            )

    await asyncio.gather(*(writer() for _ in range(SEED_CONCURRENCY)))


async def _prepare(url: str, tenant_id: str, read_token: str, rooms: int, events: int) -> None:
    store = await open_store(url, box=SecretBox([SECRETS_KEY]), migrate=True)
    try:
        await _seed(
            store, tenant_id=tenant_id, read_token=read_token, rooms=rooms, events_per_room=events
        )
    finally:
        await store.close()


async def _measure(
    server: Server, *, tenant_id: str, read_token: str, args: argparse.Namespace
) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {read_token}"}
    json_headers = {**auth, "Content-Type": "application/json"}
    today = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = {
        "start": today.isoformat().replace("+00:00", "Z"),
        "end": (today + dt.timedelta(days=1)).isoformat().replace("+00:00", "Z"),
    }
    floor_rooms = min(args.rooms, ROOMS_PER_FLOOR)

    def bulk(min_free: int) -> bytes:
        body = {"building": BUILDING, "floor": "1", **day, "min_free_minutes": min_free}
        return request_bytes(
            "POST",
            f"/v1/tenants/{tenant_id}/availability",
            headers=json_headers,
            body=json.dumps(body).encode(),
        )

    started = time.perf_counter()
    _, _ = await timed_requests(server, [bulk(15)])  # loads the tenant into the read model
    first_ms = (time.perf_counter() - started) * 1000
    warm, _ = await timed_requests(server, [bulk(15)] * 5)
    cpu = server.cpu_s()
    cached, size = await timed_requests(server, [bulk(15)] * args.bulk_requests)
    bulk_cpu_ms = (server.cpu_s() - cpu) * 1000 / len(cached)
    fresh_count = max(1, min(args.bulk_requests, 50))
    cpu = server.cpu_s()
    fresh, _ = await timed_requests(server, [bulk(16 + n % 200) for n in range(fresh_count)])
    fresh_cpu_ms = (server.cpu_s() - cpu) * 1000 / len(fresh)

    singles = [
        request_bytes(
            "GET", f"/v1/tenants/{tenant_id}/rooms/room-{index:05d}/availability", headers=auth
        )
        for index in range(min(args.rooms, 500))
    ]
    await throughput(server, singles, concurrency=args.concurrency, seconds=0.5)  # warm-up
    _, single_size = await timed_requests(server, singles[:1])
    baseline_command = [
        sys.executable,
        "-m",
        "bookingcache.tools.bench.availability_baseline",
        "--body-bytes",
        str(single_size),
    ]
    with bench_server(baseline_command, env=dict(os.environ)) as baseline:
        await throughput(baseline, singles, concurrency=args.concurrency, seconds=0.5)
        _, baseline_size = await timed_requests(baseline, singles[:1])
        if baseline_size != single_size:
            raise BenchError(f"the baseline answers {baseline_size} bytes, not {single_size}")
        answered, elapsed, latencies, single_cpu_s = 0, 0.0, [], 0.0
        bare_answered, bare_elapsed = 0, 0.0
        share = args.single_seconds / SINGLE_ROUNDS
        for _ in range(SINGLE_ROUNDS):
            cpu = server.cpu_s()
            count, took, seen = await throughput(
                server, singles, concurrency=args.concurrency, seconds=share
            )
            single_cpu_s += server.cpu_s() - cpu
            answered, elapsed = answered + count, elapsed + took
            latencies.extend(seen)
            count, took, _ = await throughput(
                baseline, singles, concurrency=args.concurrency, seconds=share
            )
            bare_answered, bare_elapsed = bare_answered + count, bare_elapsed + took
    single_rps = answered / elapsed
    bare_rps = bare_answered / bare_elapsed
    single_cpu_ms = single_cpu_s * 1000 / max(1, answered)
    rss, peak = server.rss_mb()
    return {
        "bulk_rooms": floor_rooms,
        "bulk_requests": len(cached),
        "bulk_response_bytes": size,
        "bulk_p50_ms": round(percentile(cached, 0.5), 2),
        "bulk_p99_ms": round(percentile(cached, 0.99), 2),
        "bulk_server_cpu_ms": round(bulk_cpu_ms, 2),
        "bulk_uncached_requests": len(fresh),
        "bulk_uncached_p50_ms": round(percentile(fresh, 0.5), 2),
        "bulk_uncached_p99_ms": round(percentile(fresh, 0.99), 2),
        "bulk_uncached_server_cpu_ms": round(fresh_cpu_ms, 2),
        "first_request_ms": round(first_ms, 1),
        "single_rps": round(single_rps, 1),
        "single_baseline_rps": round(bare_rps, 1),
        "single_ratio": round(single_rps / bare_rps, 3),
        "single_response_bytes": single_size,
        "single_requests": answered,
        "single_concurrency": args.concurrency,
        "single_p50_ms": round(percentile(latencies, 0.5), 2),
        "single_p99_ms": round(percentile(latencies, 0.99), 2),
        "single_server_cpu_ms": round(single_cpu_ms, 3),
        "rss_mb": rss,
        "rss_peak_mb": peak,
        "warm_bulk_ms": [round(value, 1) for value in warm],
    }


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.rooms < 1:
        print("bookingcache bench availability: --rooms must be at least 1")
        return 2
    events = args.events_per_room
    if events is None:
        events = 30 if args.rooms >= 10_000 else 20 * DAYS
    tenant_id = f"bench-{secrets.token_hex(4)}"
    read_token = f"{tenant_id}.{secrets.token_urlsafe(32)}"
    admin_token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="bookingcache-bench-") as scratch:
        data_dir = Path(scratch)
        url = args.database_url or f"sqlite:///{data_dir / 'bench.db'}"
        started = time.perf_counter()
        asyncio.run(_prepare(url, tenant_id, read_token, args.rooms, events))
        seed_s = time.perf_counter() - started
        try:
            with running_server(
                secrets_key=SECRETS_KEY,
                data_dir=data_dir,
                database_url=url,
                admin_token=admin_token,
            ) as server:
                measured = asyncio.run(
                    _measure(server, tenant_id=tenant_id, read_token=read_token, args=args)
                )
        except BenchError as exc:
            print(f"bookingcache bench availability: {exc}")
            return 1
    result = {
        "benchmark": "availability",
        "rooms": args.rooms,
        "events_per_room": events,
        "engine": url.split(":", 1)[0],
        "seed_s": round(seed_s, 1),
        **measured,
    }
    report(result, as_json=args.json)
    return 0
