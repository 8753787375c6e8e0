"""``bookingcache bench scale``: the workers' refresh capacity with 1, 2 and 4 worker processes.

One API process (``serve --no-worker``, the intake Graph notifies) and a Graph emulator (TLS,
``--latency-ms``, 50 by default: each Graph request waits that long, as Microsoft 365's do)
share a new PostgreSQL database holding ``--rooms`` rooms. Then, for 1, 2 and 4 workers in
turn (``bookingcache worker``, default concurrency knobs, on the same database and emulator;
every process's pool at ``POOL_SIZE``), the benchmark starts the workers, keeps them busy for
``--warmup`` seconds and measures for ``--duration`` seconds, then stops them:

- Sustained change: ``--rate`` bookings a second are made or cancelled in random rooms through
  the emulator's control API (each room holds at most ``--per-room`` of them), so Graph
  notifies the API process and the intake queues the rooms' refreshes.
- The queue never runs dry: every ``--refill-ms`` the benchmark makes every room's refresh due
  now, through the statement intake uses (a job made, or the pending one pulled forward). A
  refresh of a room that did not change since its last one reads an empty delta page: one
  Graph request and a database transaction, as every refresh, but nothing written (outcome
  ``unchanged``).

Refreshes per second are the successful ones (outcomes ``changed`` and ``unchanged``) the
workers' ``/metrics`` count in the window; the failed, throttled, superseded and dropped ones are
reported apart. The emulator's counters (reset at each window's start) give Graph's 429s
(``graph_throttled``, none expected) and the highest number of requests in flight on one
mailbox (at most 4, Graph's limit). Each process group's CPU seconds in the window (the API
process, the workers, the emulator, this benchmark, and PostgreSQL's processes) come from
``/proc``, and the machine's busy share of all its cores from ``/proc/stat``.

The curve flattens at the first step whose speedup is under 90% of linear; the reason given
is the CPU when the machine's cores were over 90% busy in that step, else the workers'
concurrency (``max_refreshes_per_tenant`` refreshes in flight per worker, each waiting on
Graph's latency).

The module is one benchmark end to end (its processes, the load, the measurement and the
report), a little over 500 lines; split up, its steps would only be read together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import random
import ssl
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bookingcache.clock import SystemClock
from bookingcache.settings import SyncSettings
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.sync import metrics as outcomes
from bookingcache.tools.bench import freshness, soak
from bookingcache.tools.bench.activity import ORGANIZER, TENANT, control_call, mailbox
from bookingcache.tools.bench.http import BenchError, cpu_s, paced, report
from bookingcache.tools.bench.vacuum import VacuumStandIn, vacuuming
from bookingcache.tools.processes import serve_command

WORKER_COUNTS = (1, 2, 4)
TARGET_SPEEDUP_2 = 1.8
# A step flattens the curve below this share of linear scaling.
LINEAR_SHARE = 0.9
# The machine's cores count as saturated above this busy share.
SATURATED = 0.9
SUCCESS = (outcomes.CHANGED, outcomes.UNCHANGED)
# The bookings' slots: the 96 half hours of tomorrow and the day after.
SLOTS = 96
SLOT = dt.timedelta(minutes=30)
# Changes sent and not yet answered, at most (the control client's connections).
IN_FLIGHT = 32
REFILL_CHUNK = 250
# Each process's main pool (BOOKINGCACHE_DATABASE_POOL_SIZE): 5 processes at 2 x 5 + 5 each.
POOL_SIZE = 5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench scale", description=__doc__)
    soak.database_url_option(parser)
    parser.add_argument("--rooms", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="changes per second")
    parser.add_argument("--per-room", type=int, default=2, help="bookings a room holds at most")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per Graph request")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds each")
    parser.add_argument("--refill-ms", type=float, default=1000.0, help="queue refill period")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# --- what is measured ------------------------------------------------------------------------


def _machine_busy_s() -> float:
    """CPU seconds all the machine's cores spent busy so far (not idle, not waiting on I/O)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _postgres_pids(database: str) -> list[int]:
    """PostgreSQL's processes serving ``database`` and the server's own (the postmaster, the
    writers); other databases' sessions on a shared server are left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                session = "(" in title or "[local]" in title
                if database in title.split() or not session:
                    pids.append(int(entry.name))
    return pids


def _cpu_of(pids: Sequence[int]) -> dict[int, float]:
    seen = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            seen[pid] = cpu_s(pid)
    return seen


@dataclass(slots=True)
class CpuMark:
    """The CPU seconds of each process group, and of the machine, at one instant."""

    groups: dict[str, dict[int, float]]
    machine_s: float
    at: float

    @classmethod
    def take(cls, groups: Mapping[str, Sequence[int]], database: str) -> CpuMark:
        marked = {name: _cpu_of(pids) for name, pids in groups.items()}
        marked["postgres"] = _cpu_of(_postgres_pids(database))
        return cls(marked, _machine_busy_s(), time.perf_counter())

    def since(self, start: CpuMark) -> dict[str, float]:
        """Each group's CPU seconds between ``start`` and this mark (a process that started
        in between counts from zero)."""
        used = {
            name: round(
                sum(s - start.groups.get(name, {}).get(pid, 0.0) for pid, s in pids.items()), 2
            )
            for name, pids in self.groups.items()
        }
        machine = self.machine_s - start.machine_s
        # What the machine's other processes used (a shared machine's other work).
        used["others"] = round(max(0.0, machine - sum(used.values())), 2)
        used["machine"] = round(machine, 2)
        return used


@dataclass(slots=True)
class Scrape:
    """The workers' ``/metrics`` at one instant: refreshes finished so far by outcome (summed
    over the workers) and the queue's depth (the largest any worker saw)."""

    outcomes: dict[str, float]
    queue_depth: float

    @classmethod
    async def take(cls, client: httpx.AsyncClient, urls: Sequence[str]) -> Scrape:
        counts: dict[str, float] = {}
        depth = 0.0
        for sample in await soak.worker_samples(client, urls):
            if sample.name == "bookingcache_sync_refreshes_total":
                outcome = sample.labels["outcome"]
                counts[outcome] = counts.get(outcome, 0.0) + sample.value
            elif sample.name == "bookingcache_sync_queue_depth":
                depth = max(depth, sample.value)
        return cls(counts, depth)


# --- the load --------------------------------------------------------------------------------


@dataclass(slots=True)
class Changes:
    """Bookings made and cancelled at the emulator, each room holding at most ``per_room``."""

    control: httpx.AsyncClient
    rooms: int
    per_room: int
    rng: random.Random
    first_slot: dt.datetime
    held: dict[int, dict[str, int]] = field(default_factory=dict)
    busy: set[int] = field(default_factory=set)
    sent: int = 0
    failures: int = 0
    skipped: int = 0

    async def one(self) -> None:
        room = self.rng.randrange(self.rooms)
        if room in self.busy:  # a change of the room is on its way: the next room's turn
            room = (room + 1) % self.rooms
            if room in self.busy:
                self.skipped += 1
                return
        self.busy.add(room)
        try:
            await self._change(room)
        finally:
            self.busy.discard(room)

    async def _change(self, room: int) -> None:
        held = self.held.setdefault(room, {})
        box = mailbox(room)
        if len(held) < self.per_room:
            slot = self.rng.choice([s for s in range(SLOTS) if s not in held.values()])
            start = self.first_slot + slot * SLOT
            body = {
                "organizer": ORGANIZER,
                "subject": "Bench",
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": (start + SLOT / 2).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            answer = await self._send("POST", f"/mailboxes/{box}/bookings", body)
            if answer is not None:
                held[str(answer.json()["id"])] = slot
        else:
            booking = self.rng.choice(sorted(held))
            del held[booking]
            await self._send("DELETE", f"/mailboxes/{box}/events/{booking}", None)

    async def _send(
        self, method: str, path: str, body: dict[str, str] | None
    ) -> httpx.Response | None:
        self.sent += 1
        answer = await control_call(self.control, method, path, body)
        self.failures += answer is None
        return answer

    async def drive(self, rate: float, stop: asyncio.Event) -> None:
        """Changes at ``rate`` a second until ``stop``; a change falling due while
        ``IN_FLIGHT`` are still unanswered is skipped, so a slow emulator gets no backlog."""
        tasks: set[asyncio.Task[None]] = set()
        async for _ in paced(rate, 24 * 3600.0):  # until stopped
            if stop.is_set():
                break
            if len(tasks) >= IN_FLIGHT:
                self.skipped += 1
                continue
            task = asyncio.create_task(self.one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


@dataclass(slots=True)
class Refill:
    """Every ``period_s``, every room's refresh due now: a job made, or the pending one pulled
    forward, by the intake's own statement (a job the sweep spread out is due at once too),
    ``REFILL_CHUNK`` rooms a transaction. A transaction the database aborted (a deadlock with
    a worker's or the intake's writes) is counted and left to the next round."""

    store: SqlStore
    queue: SqlJobQueue
    rooms: int
    period_s: float
    aborted: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        keys = [(TENANT, mailbox(i)) for i in range(self.rooms)]
        while not stop.is_set():
            now = dt.datetime.now(dt.UTC)
            for start in range(0, len(keys), REFILL_CHUNK):
                wanted = dict.fromkeys(keys[start : start + REFILL_CHUNK], False)
                try:
                    made = await self.store.transaction(
                        functools.partial(self._make, wanted=wanted, now=now)
                    )
                except Exception:  # noqa: BLE001 (an abort, whatever the driver calls it)
                    self.aborted += 1
                    continue
                if made:
                    self.queue.committed(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period_s)

    def _make(self, connection: Any, *, wanted: dict[tuple[str, str], bool], now: Any) -> int:
        return self.queue.make_pending(
            connection, wanted, due=now, now=now, notified=now, changed=frozenset()
        )


# --- the phases ------------------------------------------------------------------------------


@dataclass(slots=True)
class Cluster:
    """What the phases share: the database, the API process, the emulator."""

    root: Path
    env: dict[str, str]
    database_url: str
    pids: dict[str, int]  # "api" and "emulator"
    control: httpx.AsyncClient


async def _window(
    args: argparse.Namespace, cluster: Cluster, workers: Sequence[str], pids: Sequence[int]
) -> dict[str, Any]:
    """The warm-up then the measured window, under ``Changes`` (and the refill)."""
    base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(args.seed)  # noqa: S311 (a reproducible workload)
    changes = Changes(cluster.control, args.rooms, args.per_room, rng, base + dt.timedelta(1))
    groups = {
        "api": [cluster.pids["api"]],
        "workers": list(pids),
        "emulator": [cluster.pids["emulator"]],
        "bench": [os.getpid()],
    }
    database = urllib.parse.urlsplit(cluster.database_url).path.lstrip("/")
    stop = asyncio.Event()
    load = asyncio.create_task(changes.drive(args.rate, stop))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.sleep(args.warmup)
            await cluster.control.post("/counters/reset")
            sent, failed, skipped = changes.sent, changes.failures, changes.skipped
            first, start = await Scrape.take(client, workers), CpuMark.take(groups, database)
            depths = [first.queue_depth]
            while time.perf_counter() - start.at < args.duration:
                await asyncio.sleep(min(1.0, args.duration - (time.perf_counter() - start.at)))
                depths.append((await Scrape.take(client, workers)).queue_depth)
            last, end = await Scrape.take(client, workers), CpuMark.take(groups, database)
            counters = (await cluster.control.get("/counters")).json()
    finally:
        stop.set()
        await load
    elapsed = end.at - start.at
    done = {k: round(v - first.outcomes.get(k, 0.0)) for k, v in sorted(last.outcomes.items())}
    ok = sum(done.get(outcome, 0) for outcome in SUCCESS)
    cpu = end.since(start)
    return {
        "workers": len(workers),
        "refreshes_per_s": round(ok / elapsed, 1),
        "window_s": round(elapsed, 2),
        "outcomes": done,
        "queue_depth_min": min(depths),
        "changes_sent": changes.sent - sent,
        "changes_skipped": changes.skipped - skipped,
        "control_failures": changes.failures - failed,
        "graph_requests": sum(counters.get("requests_per_mailbox", {}).values()),
        "graph_throttled": counters.get("throttled", 0),
        "graph_app_throttled": counters.get("app_throttled", 0),
        "max_mailbox_concurrency": max(
            counters.get("max_concurrency_per_mailbox", {}).values(), default=0
        ),
        "cpu_s": cpu,
        "machine_busy": round(cpu["machine"] / (elapsed * (os.cpu_count() or 1)), 3),
    }


async def _phases(
    args: argparse.Namespace,
    root: Path,
    info: dict[str, Any],
    database_url: str,
    api: tuple[str, int],
    emulator_pid: int,
) -> tuple[dict[str, dict[str, Any]], int, VacuumStandIn | None]:
    """The tenant and its rooms set up, then one window per worker count; ``api`` is the API
    process's URL and pid. Returns the windows, the refill's aborted transactions, and the
    stand-in for autovacuum where the server runs none (``bench.vacuum``: the refill
    rewrites every job each second, and the phases run one after another on one database)."""
    pids = {"api": api[1], "emulator": emulator_pid}
    env = _service_env(info)
    verify = ssl.create_default_context(cafile=info["cert_path"])
    await freshness.create_tenant(args, api[0], None, info["tenant_id"])
    await freshness.import_rooms(args, api[0])
    store = await open_store(database_url, box=SecretBox([freshness.SECRETS_KEY]), migrate=False)
    queue = SqlJobQueue(store, clock=SystemClock())
    stop = asyncio.Event()
    # From the first sync on, every room is due at once.
    refiller = Refill(store, queue, args.rooms, args.refill_ms / 1000)
    refill = asyncio.create_task(refiller.run(stop))
    phases: dict[str, dict[str, Any]] = {}
    async with vacuuming(database_url) as stand_in:
        try:
            async with httpx.AsyncClient(
                base_url=info["control_url"], verify=verify, timeout=30,
                limits=httpx.Limits(max_connections=32),
            ) as control:  # fmt: skip
                cluster = Cluster(root, env, database_url, pids, control)
                for count in WORKER_COUNTS:
                    with contextlib.ExitStack() as stack:
                        started = [
                            soak.start_worker(
                                stack,
                                env,
                                database_url,
                                root / "service",
                                root / f"workers{count}-{index}.log",
                            )
                            for index in range(count)
                        ]
                        if not phases:  # the rooms' first sync, by the first phase's worker
                            await freshness.first_sync(args, info, [api[0]], database_url, verify)
                        urls = [w.banner_url for w in started]
                        phases[str(count)] = await _window(
                            args, cluster, urls, [w.pid for w in started]
                        )
        finally:
            stop.set()
            await refill
            await store.close()
    return phases, refiller.aborted, stand_in


def _summary(
    args: argparse.Namespace,
    phases: dict[str, dict[str, Any]],
    refill_aborted: int,
    stand_in: VacuumStandIn | None,
) -> dict[str, Any]:
    rates = {count: phase["refreshes_per_s"] for count, phase in phases.items()}
    one = rates["1"] or float("nan")
    flattens_at, why = None, "the curve did not flatten up to 4 workers"
    concurrency = SyncSettings().max_refreshes_per_tenant
    for low, high in itertools.pairwise(WORKER_COUNTS):
        step = rates[str(high)] / (rates[str(low)] or float("nan"))
        if step < LINEAR_SHARE * high / low:
            flattens_at = high
            phase = phases[str(high)]
            if phase["machine_busy"] >= SATURATED:
                cpu = phase["cpu_s"]
                shares = ", ".join(
                    f"{name} {seconds:.1f} s" for name, seconds in cpu.items() if name != "machine"
                )
                why = (
                    f"CPU: with {high} workers the machine's {os.cpu_count()} cores were "
                    f"{phase['machine_busy']:.0%} busy (CPU seconds in the "
                    f"{phase['window_s']:.0f} s window: {shares})"
                )
            else:
                bound = high * concurrency / (args.latency_ms / 1000 or float("nan"))
                why = (
                    f"not the CPU (the cores were {phase['machine_busy']:.0%} busy): each worker "
                    f"runs at most {concurrency} refreshes of the tenant at once, each waiting "
                    f"{args.latency_ms:.0f} ms on Graph, at most {bound:.0f} refreshes/s for "
                    f"{high} workers"
                )
            break
    return {
        "rooms": args.rooms,
        "rate_per_s": args.rate,
        "latency_ms": args.latency_ms,
        "database": "postgresql",
        "api_processes": 1,
        "cores": os.cpu_count(),
        "refreshes_per_s": rates,
        "speedup_2": round(rates["2"] / one, 2),
        "speedup_4": round(rates["4"] / one, 2),
        "target_speedup_2": TARGET_SPEEDUP_2,
        "target_met": rates["2"] / one >= TARGET_SPEEDUP_2,
        "flattens_at_workers": flattens_at,
        "why": why,
        "graph_throttled": sum(phase["graph_throttled"] for phase in phases.values()),
        "refill_aborted": refill_aborted,
        "vacuum_stand_in": stand_in.report() if stand_in is not None else None,
        "max_mailbox_concurrency": max(p["max_mailbox_concurrency"] for p in phases.values()),
        "cpu_s": {count: phase["cpu_s"] for count, phase in phases.items()},
        "machine_busy": {count: phase["machine_busy"] for count, phase in phases.items()},
        "phases": phases,
    }


def _measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    seed = root / "seed.json"
    freshness.seed_file(seed, args.rooms)
    argv = freshness.emulator_command(root, seed, "--latency-ms", str(args.latency_ms))
    with (
        freshness.child(
            argv, os.environ, log=root / "emulator.log", ready=freshness.emulator_ready
        ) as emulator,
        soak.database(args.database_url, "scale") as database_url,
    ):
        info: dict[str, Any] = json.loads(emulator.banner)
        env = _service_env(info)
        api_argv = serve_command(root / "service", "--database-url", database_url, "--no-worker")
        with freshness.child(api_argv, env, log=root / "api.log") as api:
            serving = (api.banner_url, api.pid)
            try:
                measured = _phases(args, root, info, database_url, serving, emulator.pid)
                phases, aborted, stand_in = asyncio.run(measured)
            except BenchError:
                for log in sorted(root.glob("*.log")):
                    sys.stderr.write(f"--- {log.name}\n{log.read_text()[-2000:]}")
                raise
    return _summary(args, phases, aborted, stand_in)


def _service_env(info: dict[str, Any]) -> dict[str, str]:
    """The processes' environment, with pools small enough that the API process and 4 workers
    (15 connections each at most) fit within a default PostgreSQL's 100 connections."""
    return {**freshness.service_env(info), "BOOKINGCACHE_DATABASE_POOL_SIZE": str(POOL_SIZE)}


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if min(args.rooms, args.per_room) < 1 or min(args.rate, args.duration, args.refill_ms) <= 0:
        print("bookingcache bench scale: counts, rate and times must be positive", file=sys.stderr)
        return 2
    if args.per_room >= SLOTS or args.warmup < 0 or args.latency_ms < 0:
        print(
            f"bookingcache bench scale: --per-room must be under {SLOTS}, --warmup and "
            "--latency-ms not negative",
            file=sys.stderr,
        )
        return 2
    result = soak.measure_cluster("scale", _measure, args)
    if result is None:
        return 1
    shown = result if args.json else {k: v for k, v in result.items() if k != "phases"}
    report(shown, as_json=args.json)
    return 0
