"""The cluster as real processes on PostgreSQL: ``bookingcache worker`` processes against the
Graph emulator (a real TLS server with latency, so refreshes are in flight), killed, stopped and
restarted while they hold claims and duties.

- a worker killed (SIGKILL) mid-refresh: a peer, or the same instance started again, refreshes
  every calendar it held well before the claims' 60 s lease, each read once;
- the holder of the cluster duties killed: a peer takes them over within the lease plus one
  renewal period;
- the holder stopped (SIGSTOP) past its lease and resumed: it finds the lease lost and does not
  act on it.

The bounds are the design's (docs/operations.md, "Cluster duties"), waited for by polling with a
timeout; the figures are the lease's, far above what a healthy run takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache.clock import SystemClock
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.tools import processes
from bookingcache.tools.processes import command, free_port, worker_ready
from tests.support.cluster import (
    claims_of,
    duty_holder,
    duty_runs,
    fresh_since,
    graph_tenant,
    process_env,
)
from tests.support.databases import sealing_box
from tests.support.tenants import TENANT
from tests.support.waiting import until

pytestmark = pytest.mark.slow

ROOMS = 16
LATENCY_MS = 1500  # per Graph request: a refresh is in flight for at least this long
JOB_LEASE_S = 60.0  # the claims' lease (the default): a restart must not wait for it
DUTY_LEASE_S = 6.0
DUTY_RENEW_S = 2.0


@pytest.fixture
def postgres(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("a cluster of processes shares one PostgreSQL database")
    return database_url


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[dict[str, Any]]:
    seed = tmp_path / "seed.json"
    rooms = [
        {"upn": f"room-{index:02d}@cluster.example", "display_name": f"Room {index}",
         "time_zone": "UTC", "is_room": True}
        for index in range(ROOMS)
    ]  # fmt: skip
    apps = [{"name": "full", "display_name": "bookingcache", "roles": ["Calendars.Read"]}]
    seed.write_text(json.dumps({"mailboxes": rooms, "apps": apps}), encoding="utf-8")
    argv = [
        sys.executable, "-m", "graph_emulator.cli", "--seed", str(seed), "--tls",
        "--tls-dir", str(tmp_path / "tls"), "--port", "0", "--latency-ms", str(LATENCY_MS),
    ]  # fmt: skip
    with processes.running(
        argv, env=dict(os.environ), ready=lambda line: line.startswith("{"), timeout_s=60
    ) as child:
        yield json.loads(child.banner)


@pytest.fixture
async def store(postgres: str, emulator: dict[str, Any]) -> Any:
    store = await open_store(postgres, box=sealing_box(), migrate=False, clock=SystemClock())
    await graph_tenant(
        store, emulator["tenant_id"], [room["upn"] for room in emulator["mailboxes"]]
    )
    try:
        yield store
    finally:
        await store.close()


class Cluster:
    """Worker processes on one database, started, killed and stopped by name."""

    def __init__(self, database_url: str, emulator: dict[str, Any], tmp: Path) -> None:
        self.tmp = tmp
        self.children: dict[str, processes.Child] = {}
        self.ports: dict[str, int] = {}
        self.env = {
            **process_env(database_url, emulator),
            "BOOKINGCACHE_DUTY_LEASE_S": str(DUTY_LEASE_S),
            "BOOKINGCACHE_DUTY_RENEW_S": str(DUTY_RENEW_S),
            "BOOKINGCACHE_HEARTBEAT_S": "0.5",
            "BOOKINGCACHE_PEER_DEAD_AFTER_S": "2",
            "BOOKINGCACHE_SYNC_LEASE_S": str(JOB_LEASE_S),
            "BOOKINGCACHE_SYNC_SWEEP_INTERVAL_S": "1",
        }

    def start(self, name: str, **env: str) -> processes.Child:
        port = self.ports.setdefault(name, free_port())
        argv = command("worker", "--data-dir", str(self.tmp / name), "--metrics-port", str(port))
        child = processes.start(
            argv,
            env={**self.env, "BOOKINGCACHE_INSTANCE_ID": name, **env},
            log=self.tmp / f"{name}.log",
        )
        child.ready(worker_ready, timeout_s=60)
        self.children[name] = child
        return child

    def readiness(self, name: str) -> dict[str, Any]:
        answer = httpx.get(f"http://127.0.0.1:{self.ports[name]}/readyz", timeout=5)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def runs(self, name: str, duty: str) -> float:
        return duty_runs(f"http://127.0.0.1:{self.ports[name]}", duty)

    def close(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(Exception):
                os.kill(child.pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                child.stop(timeout_s=10)


@pytest.fixture
def cluster(postgres: str, emulator: dict[str, Any], tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(postgres, emulator, tmp_path)
    try:
        yield running
    finally:
        running.close()


async def _enqueue_all(store: SqlStore, emulator: dict[str, Any]) -> Any:
    queue = SqlJobQueue(store, clock=SystemClock())
    now = SystemClock().now()
    await queue.enqueue({(TENANT, room["upn"]): now for room in emulator["mailboxes"]})
    return now


def _control(emulator: dict[str, Any]) -> httpx.Client:
    trust = ssl.create_default_context(cafile=emulator["cert_path"])
    return httpx.Client(base_url=emulator["control_url"], verify=trust, timeout=10)


def _requests(emulator: dict[str, Any]) -> dict[str, int]:
    """Graph requests per room mailbox (by UPN) since the counters were last reset."""
    with _control(emulator) as control:
        counts = control.get("/counters").json()["requests_per_mailbox"]
    return {room["upn"]: int(counts.get(room["id"], 0)) for room in emulator["mailboxes"]}


def _reset_counters(emulator: dict[str, Any]) -> None:
    with _control(emulator) as control:
        control.post("/counters/reset").raise_for_status()


async def _one_read_each(
    store: SqlStore, emulator: dict[str, Any], cluster: Cluster, name: str
) -> dict[str, int]:
    """A round where nothing fails, on worker ``name`` alone: how many Graph requests one
    refresh of each calendar makes."""
    _reset_counters(emulator)
    started = await _enqueue_all(store, emulator)
    everyone = {room["upn"] for room in emulator["mailboxes"]}
    await until(lambda: _all_fresh(store, started, everyone), timeout_s=120, what="a quiet round")
    return _requests(emulator)


async def _all_fresh(store: SqlStore, since: Any, wanted: set[str]) -> bool:
    return wanted <= await fresh_since(store, since)


async def _killed_mid_refresh(
    store: SqlStore, cluster: Cluster, emulator: dict[str, Any], victim: str
) -> tuple[set[str], Any, float]:
    """Start a round, kill ``victim`` (SIGKILL) while it holds claims whose refreshes are in
    flight; what it held and not yet finished, the round's start, the kill's monotonic time
    (the emulator's counters are reset at the kill)."""
    started = await _enqueue_all(store, emulator)
    await until(lambda: claims_of(store, victim), timeout_s=60, what=f"{victim} claims")
    await asyncio.sleep(LATENCY_MS / 1000 / 5)  # a round claimed in two batches is held whole
    held = await claims_of(store, victim)
    cluster.children[victim].kill()
    killed_at = time.monotonic()
    _reset_counters(emulator)
    unfinished = held - await fresh_since(store, started)
    assert unfinished, "the refreshes were in flight when the worker was killed"
    return unfinished, started, killed_at


async def _refreshed_after_a_kill(
    store: SqlStore,
    cluster: Cluster,
    emulator: dict[str, Any],
    per_read: dict[str, int],
    *,
    victim: str,
    then: str,
    what: str,
    **env: str,
) -> tuple[int, float, float]:
    """Kill ``victim`` mid-refresh and start ``then`` (with ``env``): the calendars the victim
    held and had not finished are refreshed well before the lease, each read once (as many
    requests as ``per_read`` counted for one read). How many they were, and the seconds from
    the kill and from the start to their refresh."""
    unfinished, started, killed_at = await _killed_mid_refresh(store, cluster, emulator, victim)
    cluster.start(then, **env)
    ready_at = time.monotonic()
    await until(
        lambda: _all_fresh(store, started, unfinished),
        timeout_s=JOB_LEASE_S / 2,
        what=f"{what}, well before the lease",
    )
    since_kill_s, since_start_s = time.monotonic() - killed_at, time.monotonic() - ready_at
    after = _requests(emulator)
    assert {mailbox: after[mailbox] for mailbox in unfinished} == {
        mailbox: per_read[mailbox] for mailbox in unfinished
    }, "each calendar read once"
    return len(unfinished), since_kill_s, since_start_s


async def test_a_killed_workers_calendars_are_refreshed_by_a_peer_and_by_its_restart(
    store: SqlStore, cluster: Cluster, emulator: dict[str, Any]
) -> None:
    cluster.start("worker-a")
    per_read = await _one_read_each(store, emulator, cluster, "worker-a")
    assert all(count >= 1 for count in per_read.values()), per_read

    # 1. worker-a dies mid-refresh; a peer starts, and its heartbeat check finds worker-a's
    # heartbeat stopped and releases its claims.
    count, taken_over_s, after_start_s = await _refreshed_after_a_kill(
        store,
        cluster,
        emulator,
        per_read,
        victim="worker-a",
        then="worker-b",
        what="the dead worker's calendars refreshed by its peer",
    )
    print(
        f"peer refreshed {count} calendars {taken_over_s:.1f}s after the kill, "
        f"{after_start_s:.1f}s after it started"
    )

    # 2. worker-b dies mid-refresh and starts again under the same instance id: it takes its
    # previous incarnation's claims back at once (no peer is left to release them).
    count, restarted_s, after_start_s = await _refreshed_after_a_kill(
        store,
        cluster,
        emulator,
        per_read,
        victim="worker-b",
        then="worker-b",
        what="the restarted worker's calendars refreshed",
        BOOKINGCACHE_PEER_DEAD_AFTER_S="600",
        BOOKINGCACHE_HEARTBEAT_S="1",
    )
    print(
        f"restart refreshed {count} calendars {restarted_s:.1f}s after the kill, "
        f"{after_start_s:.1f}s after it started"
    )


async def test_a_dead_holders_duties_are_taken_over_as_the_lease_runs_out(
    store: SqlStore, cluster: Cluster
) -> None:
    # Peers are not declared dead by their heartbeat here: the lease alone bounds the takeover.
    slow_to_judge = {"BOOKINGCACHE_PEER_DEAD_AFTER_S": "600"}
    cluster.start("worker-a", **slow_to_judge)
    await until(lambda: _holds(store, "worker-a"), timeout_s=30, what="worker-a holds the duties")
    cluster.start("worker-b", **slow_to_judge)
    assert cluster.readiness("worker-b")["duties"] == []
    cluster.children["worker-a"].kill()
    await until(
        lambda: _holds(store, "worker-b"),
        timeout_s=DUTY_LEASE_S + 10,  # the bound, and a loaded machine's slack
        what="worker-b took the duties over",
    )
    ready = cluster.readiness("worker-b")
    assert sorted(duty["duty"] for duty in ready["duties"]) == ["retention", "sweep"]
    before = cluster.runs("worker-b", "sweep")
    await until(
        lambda: cluster.runs("worker-b", "sweep") > before, timeout_s=30, what="the sweep ran"
    )


async def _holds(store: SqlStore, name: str) -> bool:
    return all([await duty_holder(store, duty) == name for duty in ("sweep", "retention")])


async def test_a_holder_stopped_past_its_lease_does_not_act_when_it_resumes(
    store: SqlStore, cluster: Cluster
) -> None:
    slow_to_judge = {"BOOKINGCACHE_PEER_DEAD_AFTER_S": "600"}
    stopped = cluster.start("worker-a", **slow_to_judge)
    await until(lambda: _holds(store, "worker-a"), timeout_s=30, what="worker-a holds the duties")
    cluster.start("worker-b", **slow_to_judge)
    os.kill(stopped.pid, signal.SIGSTOP)
    await until(
        lambda: _holds(store, "worker-b"),
        timeout_s=DUTY_LEASE_S + 10,
        what="worker-b took the duties over",
    )
    stalled_runs = cluster.runs("worker-b", "sweep")
    os.kill(stopped.pid, signal.SIGCONT)
    resumed = cluster.runs("worker-a", "sweep")
    # worker-b keeps sweeping; worker-a, resumed, found its lease lost before acting.
    await until(
        lambda: cluster.runs("worker-b", "sweep") >= stalled_runs + 2,
        timeout_s=30,
        what="worker-b swept twice more",
    )
    assert cluster.runs("worker-a", "sweep") == resumed
    assert cluster.readiness("worker-a")["duties"] == []
    assert await _holds(store, "worker-b")
