"""``bookingcache bench soak``: a cluster under steady load for minutes, watched for leaks.

Two API processes (``serve --no-worker``) and two workers (``bookingcache worker``) share a new
PostgreSQL database. A Graph emulator (TLS) holds the rooms and notifies the API processes
directly (Alternative 1): half the rooms' subscriptions name one API process, half the other.
The benchmark then changes the rooms at a steady rate for a warm-up and the measured window:

- The amount of cached data stays the same. Each room holds about ``--per-room`` bookings
  (tomorrow and the day after): a room below it gets a booking; otherwise one of its bookings is
  moved or cancelled, equally often. Any growth of the processes' memory is then a leak, not
  data.
- Every change's freshness is timed from just before its control call to the first bulk
  availability answer that shows it. The benchmark asks the two API processes in turn, so each
  process's read model (fed by the other processes' writes over LISTEN/NOTIFY) is measured.
- One change-stream client follows the whole tenant on each API process.

Every ``--interval`` seconds it records each process's resident memory (from ``/proc``) and the
queue as the workers' ``/metrics`` show it (``bookingcache_sync_queue_depth`` and
``bookingcache_sync_queue_oldest_due_seconds``). Each interval's freshness is that of the
changes sent in it.

The targets (``targets_met``):
- no monotonic memory growth: each process's fitted slope over the measured window is under
  ``MEMORY_SLOPE_LIMIT_MB_PER_MIN``;
- the queue bounded: never more jobs than one second of changes (by Little's law, a queue whose
  jobs wait under a second holds fewer than ``rate`` of them), and none due for over a second;
- freshness p99 at most ``P99_LIMIT_MS`` in every interval of the measured window, and no
  change lost.

The queue and memory samples and the freshness of the warm-up's intervals are reported and
drawn too; the memory slopes are fitted over the measured window only, after the processes'
caches and pools have filled.

The cluster's processes run with the memory allocator the service's image preloads
(``--allocator jemalloc``, deploy/Dockerfile), or with the C library's own (``--allocator
system``): under this load glibc's heap kept growing in the workers while their Python objects
stayed level (docs/operations.md, "Memory").

On a server that runs without autovacuum (PostgreSQL's default is on), the benchmark stands in
for it (``vacuum_stand_in``): every ``autovacuum_naptime`` it vacuums or analyzes the tables of
its database that autovacuum would, at autovacuum's pace (``bench.vacuum``). Otherwise the rows
every refresh deletes and updates (the jobs, the calendars' sync state) would pile up as dead
rows that every claim scans, and the run would measure a server no operator runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bookingcache.errors import InvalidInput
from bookingcache.store.sql.pgserver import create_database, drop_database
from bookingcache.tools.bench import freshness
from bookingcache.tools.bench.activity import (
    ADMIN_TOKEN,
    SLOT,
    TENANT,
    Change,
    Run,
    admin_client,
)
from bookingcache.tools.bench.allocator import ALLOCATORS, check_allocator, with_allocator
from bookingcache.tools.bench.http import BenchError, percentile, report, rss_mb
from bookingcache.tools.bench.sse import StreamClient
from bookingcache.tools.bench.vacuum import vacuuming
from bookingcache.tools.processes import Child, command, serve_command

MEMORY_SLOPE_LIMIT_MB_PER_MIN = 1.0
P99_LIMIT_MS = 1000.0
# The bookings' slots: the 96 half hours of tomorrow and the day after.
SLOTS = 96
API_PROCESSES = 2
WORKERS = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench soak", description=__doc__)
    database_url_option(parser)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--duration", type=float, default=600.0, help="measured seconds")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds of the same load before the window"
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--per-room", type=int, default=4, help="bookings each room holds")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait after")
    parser.add_argument("--poll-ms", type=float, default=25.0, help="availability polling")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--allocator",
        choices=sorted(ALLOCATORS),
        default="jemalloc",
        help="the cluster's memory allocator: jemalloc, as the service's image runs it "
        "(the default), or the C library's own",
    )
    parser.add_argument("--plot", type=Path, help="draw the samples into this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def database_url_option(parser: argparse.ArgumentParser) -> None:
    """``--database-url``: the PostgreSQL server on which the benchmark's ``database`` lives."""
    parser.add_argument(
        "--database-url",
        required=True,
        help="a PostgreSQL server (postgresql://...): the benchmark creates a database of its "
        "own there and drops it afterwards",
    )


class SteadyRun(Run):
    """``Run``'s measurement with an activity that keeps the cached data's size steady, and
    availability asked of several API processes in turn."""

    def __init__(
        self,
        args: argparse.Namespace,
        services: Sequence[str],
        control: str,
        verify: ssl.SSLContext,
    ) -> None:
        super().__init__(args, services[0], control, verify)
        self.readers = [self.service, *(admin_client(url) for url in services[1:])]
        self.turn = 0
        self.skipped = 0

    def slot_of(self, span: tuple[Any, Any]) -> int:
        return int((span[0] - self.first_slot) / SLOT)

    async def mutate(self) -> None:
        room = self.rng.randrange(self.args.rooms)
        confirmed = self.bookings.setdefault(room, {})
        unseen = [change for change in self.pending if change.room == room]
        taken = set(confirmed.values()) | {
            self.slot_of(span) for change in unseen for span in (change.busy, change.free) if span
        }
        free = [slot for slot in range(SLOTS) if slot not in taken]
        held = len(confirmed) + sum(1 for change in unseen if change.busy is not None)
        sent = time.perf_counter()
        if held < self.args.per_room and free:
            request = self.book(room, self.rng.choice(free), sent)
        elif confirmed:
            booking, old = self.rng.choice(sorted(confirmed.items()))
            del confirmed[booking]
            if free and self.rng.random() < 0.5:
                request = self.move(room, booking, old, self.rng.choice(free), sent)
            else:
                request = self.cancel(room, booking, old, sent)
        else:  # every booking of the room is still on its way
            self.skipped += 1
            return
        await self.send(*request)

    async def observe_once(self) -> None:
        self.service = self.readers[self.turn % len(self.readers)]
        self.turn += 1
        await super().observe_once()

    async def aclose(self) -> None:
        for reader in self.readers[1:]:
            await reader.aclose()
        self.service = self.readers[0]
        await super().aclose()


@dataclass(slots=True)
class Watched:
    """The service's processes: name -> pid, and the workers' metrics URLs."""

    pids: dict[str, int]
    worker_metrics: list[str]
    samples: list[dict[str, Any]] = field(default_factory=list)


async def worker_samples(client: httpx.AsyncClient, urls: Sequence[str]) -> list[Sample]:
    """Every sample of the workers' ``/metrics`` (at ``urls``), one worker after another."""
    samples: list[Sample] = []
    for url in urls:
        answer = await client.get(f"{url}/metrics")
        if answer.status_code != 200:
            raise BenchError(f"a worker's /metrics answered {answer.status_code}")
        for family in text_string_to_metric_families(answer.text):
            samples += family.samples
    return samples


async def _queue(client: httpx.AsyncClient, urls: Sequence[str]) -> tuple[float, float]:
    """(queue depth, oldest due seconds) as the workers' metrics show them (the largest)."""
    depth = oldest = 0.0
    for sample in await worker_samples(client, urls):
        if sample.name == "bookingcache_sync_queue_depth":
            depth = max(depth, sample.value)
        elif sample.name == "bookingcache_sync_queue_oldest_due_seconds":
            oldest = max(oldest, sample.value)
    return depth, oldest


async def _sample(watched: Watched, began: float, interval: float, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            depth, oldest = await _queue(client, watched.worker_metrics)
            watched.samples.append(
                {
                    "t_s": round(time.perf_counter() - began, 2),
                    "rss_mb": {name: rss_mb(pid)[0] for name, pid in watched.pids.items()},
                    "queue_depth": depth,
                    "queue_oldest_due_s": round(oldest, 3),
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return float("nan")
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60


def _intervals(run: SteadyRun, began: float, interval: float, total: float) -> list[dict[str, Any]]:
    """Each interval's freshness: the changes sent in it, and how long each took to show."""
    buckets: list[list[Change]] = [[] for _ in range(max(1, math.ceil(total / interval)))]
    for change in run.changes:
        index = min(len(buckets) - 1, int((change.sent - began) // interval))
        buckets[index].append(change)
    rows = []
    for index, changes in enumerate(buckets):
        seen = [(c.seen - c.sent) * 1000 for c in changes if c.seen is not None]
        rows.append(
            {
                "t_s": round((index + 1) * interval, 1),
                "changes": len(changes),
                "p50_ms": round(percentile(seen, 0.50), 1) if seen else None,
                "p99_ms": round(percentile(seen, 0.99), 1) if seen else None,
                "lost": len(changes) - len(seen),
            }
        )
    return rows


async def _soak(
    args: argparse.Namespace,
    info: Mapping[str, Any],
    services: Sequence[str],
    watched: Watched,
    verify: ssl.SSLContext,
    database_url: str,
) -> dict[str, Any]:
    run_args = argparse.Namespace(**vars(args))
    run_args.duration = args.warmup + args.duration
    run_args.no_stream = True  # the stream clients only follow; freshness is the API's
    run = SteadyRun(run_args, services, info["control_url"], verify)
    streams = [
        StreamClient(url, f"/v1/tenants/{TENANT}/stream", ADMIN_TOKEN, run.on_stream)
        for url in services
    ]
    readers = [asyncio.create_task(stream.run()) for stream in streams]
    stop = asyncio.Event()
    async with vacuuming(database_url) as stand_in:
        try:
            await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in streams)), 30)
            await run.control.post("/counters/reset")
            began = time.perf_counter()
            sampler = asyncio.create_task(_sample(watched, began, args.interval, stop))
            observer = asyncio.create_task(run.observe(stop))
            await run.drive()
            run.driven = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.drained.wait(), timeout=args.settle)
            stop.set()
            await observer
            await sampler
            counters = (await run.control.get("/counters")).json()
        finally:
            stop.set()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await run.aclose()
    summary = _summary(args, run, began, watched, counters)
    summary["allocator"] = args.allocator
    summary["vacuum_stand_in"] = stand_in.report() if stand_in is not None else None
    return summary


def _summary(
    args: argparse.Namespace,
    run: SteadyRun,
    began: float,
    watched: Watched,
    counters: Mapping[str, Any],
) -> dict[str, Any]:
    latencies = [(c.seen - c.sent) * 1000 for c in run.changes if c.seen is not None]
    if not latencies:
        raise BenchError("no change became visible")
    intervals = _intervals(run, began, args.interval, args.warmup + args.duration)
    window = [s for s in watched.samples if s["t_s"] >= args.warmup]
    slopes = {
        name: round(slope_per_min([(s["t_s"], s["rss_mb"][name]) for s in window]), 3)
        for name in watched.pids
    }
    depth_max = max(s["queue_depth"] for s in watched.samples)
    oldest_max = max(s["queue_oldest_due_s"] for s in watched.samples)
    # The targets hold over the measured window; the warm-up's intervals are reported too.
    measured = [row for row in intervals if row["t_s"] > args.warmup]
    interval_p99 = [row["p99_ms"] for row in measured if row["p99_ms"] is not None]
    warmup_p99 = [row["p99_ms"] for row in intervals if row["t_s"] <= args.warmup and row["p99_ms"]]
    lost = len(run.pending)
    targets = {
        "memory": all(slope < MEMORY_SLOPE_LIMIT_MB_PER_MIN for slope in slopes.values()),
        "queue": depth_max <= args.rate and oldest_max <= 1.0,
        "freshness": bool(interval_p99) and max(interval_p99) <= P99_LIMIT_MS and lost == 0,
    }
    return {
        "rooms": args.rooms,
        "rate_per_s": args.rate,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "api_processes": API_PROCESSES,
        "workers": WORKERS,
        "database": "postgresql",
        "mutations": len(run.changes),
        "skipped": run.skipped,
        "control_failures": run.failures,
        "poll_errors": run.poll_errors,
        "stream_events": run.stream_events,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "worst_interval_p99_ms": max(interval_p99) if interval_p99 else None,
        "warmup_worst_interval_p99_ms": max(warmup_p99) if warmup_p99 else None,
        "lost": lost,
        "graph_throttled": counters.get("throttled", 0),
        # Graph's view of the API processes' webhooks: an endpoint answering slower than 3 s
        # too often is marked slow and its notifications wait 10 minutes (Graph's rule, as the
        # emulator plays it: emulator/src/graph_emulator/delivery.py).
        "graph_endpoints_marked_slow": counters.get("endpoints_marked_slow", 0),
        "graph_endpoints_marked_drop": counters.get("endpoints_marked_drop", 0),
        "graph_notifications_delayed_slow_endpoint": counters.get(
            "notifications_delayed_slow_endpoint", 0
        ),
        "bookings_held": sum(len(held) for held in run.bookings.values()),
        "rss_slope_mb_per_min": slopes,
        "rss_first_mb": window[0]["rss_mb"] if window else None,
        "rss_last_mb": window[-1]["rss_mb"] if window else None,
        "queue_depth_max": depth_max,
        "queue_oldest_due_max_s": oldest_max,
        "targets": targets,
        "targets_met": all(targets.values()),
        "samples": watched.samples,
        "intervals": intervals,
    }


@contextlib.contextmanager
def database(server_url: str, bench: str = "soak") -> Iterator[str]:
    """A new PostgreSQL database on ``server_url`` for benchmark ``bench``, dropped after."""
    name = f"bookingcache_bench_{bench}_{secrets.token_hex(4)}"
    try:
        url = asyncio.run(create_database(server_url, name))
    except InvalidInput as exc:
        raise BenchError("--database-url must name a PostgreSQL server (postgresql://...)") from exc
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, name))


def _metrics_ready(line: str) -> bool:
    return line.startswith("bookingcache worker metrics listening on ")


def start_worker(
    stack: contextlib.ExitStack,
    env: Mapping[str, str],
    database_url: str,
    data_dir: Path,
    log: Path,
) -> Child:
    """A ``bookingcache worker`` on the database, serving its ``/metrics`` on a free port
    (``Child.banner_url``), stopped when ``stack`` closes."""
    argv = command(
        "worker", "--database-url", database_url, "--data-dir", str(data_dir),
        "--metrics-port", "0",
    )  # fmt: skip
    return stack.enter_context(freshness.child(argv, env, log=log, ready=_metrics_ready))


def _cluster(
    stack: contextlib.ExitStack, root: Path, env: Mapping[str, str], database_url: str
) -> tuple[list[str], Watched]:
    """The API processes and the workers, started in turn (the first API process migrates
    the new database); their URLs and what the soak watches of them."""
    data_dir = root / "service"
    apis: list[Child] = []
    for index in range(API_PROCESSES):
        argv = serve_command(data_dir, "--database-url", database_url, "--no-worker")
        apis.append(stack.enter_context(freshness.child(argv, env, log=root / f"api{index}.log")))
    workers = [
        start_worker(stack, env, database_url, data_dir, root / f"worker{index}.log")
        for index in range(WORKERS)
    ]
    pids = {f"api{i}": c.pid for i, c in enumerate(apis)}
    pids |= {f"worker{i}": c.pid for i, c in enumerate(workers)}
    return [c.banner_url for c in apis], Watched(pids, [w.banner_url for w in workers])


def _measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    seed = root / "seed.json"
    freshness.seed_file(seed, args.rooms)
    with (
        freshness.child(
            freshness.emulator_command(root, seed),
            os.environ,
            log=root / "emulator.log",
            ready=freshness.emulator_ready,
        ) as emulator,
        database(args.database_url) as database_url,
        contextlib.ExitStack() as stack,
    ):
        info: dict[str, Any] = json.loads(emulator.banner)
        verify = ssl.create_default_context(cafile=info["cert_path"])
        env = with_allocator(freshness.service_env(info), args.allocator)
        services, watched = _cluster(stack, root, env, database_url)
        try:
            check_allocator(watched.pids, args.allocator)
            asyncio.run(freshness.create_tenant(args, services[0], None, info["tenant_id"]))
            asyncio.run(freshness.import_rooms(args, services[0]))
            asyncio.run(freshness.first_sync(args, info, services, database_url, verify))
            return asyncio.run(_soak(args, info, services, watched, verify, database_url))
        except BenchError:
            for log in sorted(root.glob("*.log")):
                sys.stderr.write(f"--- {log.name}\n{log.read_text()[-2000:]}")
            raise


def measure_cluster(
    bench: str,
    measure: Callable[[argparse.Namespace, Path], dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """``measure`` run in a temporary directory, set up the way ``freshness``'s pieces read
    ``args`` (Graph notifies the service, Alternative 1, through the graph source); None
    once a ``BenchError`` is told."""
    args.alternative, args.source = 1, "graph"
    try:
        with tempfile.TemporaryDirectory(prefix=f"bookingcache-{bench}-") as tmp:
            return measure(args, Path(tmp))
    except BenchError as exc:
        print(f"bookingcache bench {bench}: {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if min(args.rooms, args.per_room) < 1 or min(args.rate, args.duration, args.interval) <= 0:
        print("bookingcache bench soak: counts, rate and times must be positive", file=sys.stderr)
        return 2
    if args.per_room >= SLOTS:
        print(f"bookingcache bench soak: --per-room must be under {SLOTS}", file=sys.stderr)
        return 2
    result = measure_cluster("soak", _measure, args)
    if result is None:
        return 1
    if args.plot:
        from bookingcache.tools.bench.soak_plot import plot

        plot(result, args.plot)
    shown = (
        result
        if args.json
        else {k: v for k, v in result.items() if k not in ("samples", "intervals")}
    )
    report(shown, as_json=args.json)
    return 0
