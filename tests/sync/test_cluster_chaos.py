"""The cluster under faults, while traffic flows: two ``serve --no-worker`` processes and three
``bookingcache worker`` processes on a PostgreSQL server of the test's own, a Graph emulator
with 2,000 rooms (TLS, 300 ms per mailbox request, throttling and outages injected), bookings,
moves and cancellations at a steady rate, and a change-stream client on each API process.

The faults, one after another:
1. a worker killed (SIGKILL) while it holds refreshes in flight;
2. an API process killed in the middle of a burst of notifications, then started again;
3. every database session ended (``pg_terminate_backend``);
4. PostgreSQL stopped (a crash: ``pg_ctl stop -m immediate``) for 10 s, then started again;
5. the holder of the sweep duty stopped (SIGSTOP) past its lease, then resumed (SIGCONT).

Then, with the traffic stopped and Graph's faults cleared:
- every calendar holds exactly what the emulator holds (the sweep cannot have mended anything:
  its bound is 15 minutes, the run a few);
- every notification Graph had answered 2xx is in the inbox, and no refresh is left pending;
- the killed worker's calendars were fresh again within 5 s of the kill;
- never more than 4 concurrent Graph requests per mailbox, and never two refreshes of one
  calendar at once (a refresh keeps one request in flight, so two overlapping refreshes would
  show as two concurrent requests of one mailbox at the emulator);
- the sweep, retention, converge and silence duties ran once per period across the cluster, and
  the sweep duty was taken over as its lease ran out; the resumed holder did not act;
- each API process's stream client holds every room's state as the emulator has it.

It runs for about three minutes, marked slow: ``-m "not slow"`` leaves it out of a quick local
run, CI always runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bookingcache.clock import SystemClock
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.schema import jobs
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from bookingcache.tools import processes
from bookingcache.tools.bench.freshness import subscribe_rooms
from bookingcache.tools.bench.http import BenchError
from bookingcache.tools.bench.sse import StreamClient
from bookingcache.tools.processes import command, free_port, serve_command, worker_ready
from tests.support.cluster import (
    claims_of,
    duty_holder,
    duty_runs,
    fresh_since,
    graph_tenant,
    process_env,
)
from tests.support.databases import sealing_box
from tests.support.pgcluster import PrivatePostgres
from tests.support.tenants import TENANT
from tests.support.waiting import until

# About two and a half minutes alone; on a machine busy with other work it has taken over four.
pytestmark = [pytest.mark.slow, pytest.mark.side_lane, pytest.mark.timeout(600)]

ROOMS = 2000
LATENCY_MS = 300  # per Graph mailbox request: refreshes are in flight when a process dies
SUBSCRIBING_APPS = 4  # Graph allows 500 subscription writes per 20 s per app and tenant
RATE = 20.0  # changes per second
BURST = 120  # changes at once, while an API process is killed
SLOT = dt.timedelta(minutes=30)
BOOKING = dt.timedelta(minutes=15)
SLOTS = 48  # the half hours of the day after tomorrow
HELD = 3  # bookings a room holds at most
DUTY_LEASE_S = 6.0
DUTY_RENEW_S = 2.0
IDLE_TRANSACTION_S = 3.0  # under the duty lease: a stopped holder's locks go first
HEARTBEAT_S = 0.5
TAKEOVER_SLACK_S = 3.0  # past the lease: a transaction or two on a machine busy with other work
PEER_DEAD_AFTER_S = 2.0
SWEEP_INTERVAL_S = 2.0
TICK_S = 2.0  # the orchestrator's timer: the converge duty's period
SILENCE_PERIOD_S = min(TICK_S, 1.0)  # the silence duty's reads of the change feed
FRESH_AFTER_KILL_S = 5.0
ADMIN_TOKEN = "chaos-admin-0123456789abcdef"
DATABASE = "chaos"


def mailbox(index: int) -> str:
    return f"room-{index:04d}@chaos.example"


def room_id(index: int) -> str:
    return f"r{index}"


# --- the world -----------------------------------------------------------------------------


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        asyncio.run(server.execute(f'CREATE DATABASE "{DATABASE}"'))
        yield server
    finally:
        server.remove()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[dict[str, Any]]:
    seed = tmp_path / "seed.json"
    rooms = [
        {"upn": mailbox(index), "display_name": f"Room {index}", "time_zone": "UTC",
         "is_room": True}
        for index in range(ROOMS)
    ]  # fmt: skip
    rooms.append({"upn": "organizer@chaos.example", "display_name": "Organizer"})
    apps = [{"name": "full", "display_name": "bookingcache", "roles": ["Calendars.Read"]}] + [
        {"name": f"subscriber{n}", "display_name": f"subscriber {n}", "roles": ["Calendars.Read"]}
        for n in range(SUBSCRIBING_APPS)
    ]
    seed.write_text(json.dumps({"mailboxes": rooms, "apps": apps}), encoding="utf-8")
    argv = [
        sys.executable, "-m", "graph_emulator.cli", "--seed", str(seed), "--tls",
        "--tls-dir", str(tmp_path / "tls"), "--allow-http-notifications", "--port", "0",
        "--latency-ms", str(LATENCY_MS),
    ]  # fmt: skip
    with processes.running(
        argv, env=dict(os.environ), log=tmp_path / "emulator.log",
        ready=lambda line: line.startswith("{"), timeout_s=120,
    ) as child:  # fmt: skip
        yield json.loads(child.banner)


class Cluster:
    """The service's processes by name (``api0``, ``api1``, ``worker0``...), each on a port of
    its own that stays the same across restarts (Graph's subscriptions name the API's)."""

    def __init__(self, database_url: str, emulator: dict[str, Any], tmp: Path) -> None:
        self.tmp = tmp
        self.children: dict[str, processes.Child] = {}
        self.ports: dict[str, int] = {}
        self.env = {
            **process_env(database_url, emulator),
            "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
            "BOOKINGCACHE_DUTY_LEASE_S": str(DUTY_LEASE_S),
            "BOOKINGCACHE_DATABASE_IDLE_TRANSACTION_S": str(IDLE_TRANSACTION_S),
            "BOOKINGCACHE_DUTY_RENEW_S": str(DUTY_RENEW_S),
            "BOOKINGCACHE_HEARTBEAT_S": str(HEARTBEAT_S),
            "BOOKINGCACHE_PEER_DEAD_AFTER_S": str(PEER_DEAD_AFTER_S),
            "BOOKINGCACHE_SYNC_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
            "BOOKINGCACHE_ORCHESTRATION_TICK_S": str(TICK_S),
        }

    def start(self, name: str) -> processes.Child:
        """Start ``name`` (again) under its instance id, and wait until it is ready."""
        port = self.ports.setdefault(name, free_port())
        data_dir = self.tmp / name
        if name.startswith("api"):
            argv = serve_command(data_dir, "--no-worker", port=port)
        else:
            argv = command("worker", "--data-dir", str(data_dir), "--metrics-port", str(port))
        child = processes.start(
            argv,
            env={**self.env, "BOOKINGCACHE_INSTANCE_ID": name},
            log=self.tmp / f"{name}.log",
        )
        if name.startswith("api"):
            child.listening(timeout_s=90)
        else:
            child.ready(worker_ready, timeout_s=90)
        self.children[name] = child
        return child

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def duty_runs(self, duty: str) -> float:
        """Runs of ``duty`` across the processes that are running, from their metrics."""
        total = 0.0
        for name, child in self.children.items():
            if child.process.poll() is not None:
                continue
            total += self.runs(name, duty)
        return total

    def runs(self, name: str, duty: str) -> float:
        return duty_runs(self.url(name), duty)

    def readiness(self, name: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url(name)}/readyz", timeout=10)
        result: dict[str, Any] = answer.json()
        return result

    def all_ready(self) -> bool:
        """Every running process answers ready (its database reached, its schema current)."""
        for name, child in self.children.items():
            if child.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url(name)}/readyz", timeout=5).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True

    def logs(self) -> str:
        return "".join(
            f"\n--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for log in sorted(self.tmp.glob("*.log"))
        )

    def close(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(Exception):
                os.kill(child.pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                child.stop(timeout_s=10)


# --- the traffic ---------------------------------------------------------------------------


class Traffic:
    """Bookings, moves and cancellations through the emulator's control API, one change of a
    room at a time, with what each room holds kept as the truth to compare with."""

    def __init__(self, control: httpx.AsyncClient) -> None:
        self.control = control
        self.rng = random.Random(2000)
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        # The day after tomorrow: at least a day ahead whenever the test runs, so no booking
        # starts while it runs (one that had started would no longer be a room's next meeting).
        self.first_slot = today + dt.timedelta(days=2)
        self.held: dict[int, dict[str, int]] = {}  # room -> event id -> slot
        self.busy: set[int] = set()
        self.failures: list[str] = []
        self.changes = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def span(self, slot: int) -> tuple[dt.datetime, dt.datetime]:
        start = self.first_slot + slot * SLOT
        return start, start + BOOKING

    def truth(self, room: int) -> set[tuple[dt.datetime, dt.datetime]]:
        return {self.span(slot) for slot in self.held.get(room, {}).values()}

    async def change(self, room: int) -> None:
        if room in self.busy:
            return
        self.busy.add(room)
        try:
            await self._change(room)
        except (httpx.HTTPError, KeyError, ValueError) as exc:  # its truth is unknown now
            self.failures.append(f"room {room}: {exc!r}")
        finally:
            self.busy.discard(room)

    async def _change(self, room: int) -> None:
        held = self.held.setdefault(room, {})
        free = [slot for slot in range(SLOTS) if slot not in held.values()]
        upn = mailbox(room)
        if len(held) < HELD and (not held or self.rng.random() < 0.5):
            slot = self.rng.choice(free)
            start, end = self.span(slot)
            answer = await self._call(
                "POST", f"/mailboxes/{upn}/bookings",
                {"organizer": "organizer@chaos.example", "subject": "Chaos",
                 "start": _iso(start), "end": _iso(end)},
            )  # fmt: skip
            if answer is not None:
                held[str(answer.json()["id"])] = slot
            return
        event, slot = self.rng.choice(sorted(held.items()))
        if self.rng.random() < 0.5:
            new = self.rng.choice(free)
            start, end = self.span(new)
            path = f"/mailboxes/{upn}/events/{event}/move"
            if await self._call("POST", path, {"start": _iso(start), "end": _iso(end)}):
                held[event] = new
        elif await self._call("DELETE", f"/mailboxes/{upn}/events/{event}", None):
            del held[event]

    async def _call(self, method: str, path: str, body: Any) -> httpx.Response | None:
        answer = await self.control.request(method, path, json=body)
        if answer.status_code >= 300:
            self.failures.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
            return None
        self.changes += 1
        return answer

    def spawn(self, room: int) -> None:
        task = asyncio.create_task(self.change(room))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, stop: asyncio.Event) -> None:
        """Changes at ``RATE`` a second, to random rooms, until ``stop``."""
        while not stop.is_set():
            self.spawn(self.rng.randrange(ROOMS))
            await asyncio.sleep(1 / RATE)
        await self.settle()

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Follower:
    """A change-stream client of one API process: every room's next meeting as it last said.
    Like a browser's ``EventSource`` it connects again a moment after its stream ends or is
    refused (the process restarting, its database away), starting from a new snapshot."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.next: dict[str, str | None] = {}
        self.client = self._client()
        self.connects = 0
        self.task = asyncio.create_task(self._follow())

    def _client(self) -> StreamClient:
        return StreamClient(self.url, f"/v1/tenants/{TENANT}/stream", ADMIN_TOKEN, self.on)

    async def _follow(self) -> None:
        while True:
            self.connects += 1
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, BenchError):
                await self.client.run()
            await asyncio.sleep(1)
            self.client = self._client()

    def on(self, event: str, data: bytes, _id: str | None, _arrived: float) -> None:
        body = json.loads(data)
        if event in ("snapshot", "reset"):
            self.next = {}
        for state in body["rooms"] if event in ("snapshot", "reset") else [body]:
            self.next[state["room"]] = state["next"]["start"] if state["next"] else None

    async def connected(self) -> None:
        async with asyncio.timeout(60):
            while not self.client.connected.is_set():
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# --- the database, as the test reads it ----------------------------------------------------


async def _jobs_of(store: SqlStore, mailboxes: list[str]) -> list[dict[str, Any]]:
    """The job rows of ``mailboxes``, for a failure's report."""
    async with store.read() as connection:
        rows = await connection.execute(sa.select(jobs).where(jobs.c.mailbox.in_(mailboxes)))
        return [dict(row._mapping) for row in rows]


async def _pending_jobs(store: SqlStore) -> int:
    async with store.read() as connection:
        return int(
            (await connection.execute(sa.select(sa.func.count()).select_from(jobs))).scalar_one()
        )


async def _differences(store: SqlStore, traffic: Traffic) -> dict[str, Any]:
    """The rooms whose cached events are not what the emulator holds."""
    start, end = traffic.first_slot, traffic.first_slot + dt.timedelta(days=1)
    cached = await store.events_in_window(
        TENANT, [mailbox(i) for i in range(ROOMS)], start=start, end=end
    )
    wrong = {}
    for index in range(ROOMS):
        have = {(e.start, e.end) for e in cached.get(mailbox(index), []) if not e.is_cancelled}
        want = traffic.truth(index)
        if have != want:
            wrong[mailbox(index)] = {"cached": sorted(have), "emulator": sorted(want)}
    return wrong


def _streamed_wrong(follower: Follower, traffic: Traffic) -> dict[str, Any]:
    wrong = {}
    for index in range(ROOMS):
        truth = traffic.truth(index)
        want = _iso(min(truth)[0]) if truth else None
        have = follower.next.get(room_id(index))
        have = _iso(dt.datetime.fromisoformat(have)) if have else None
        if have != want:
            wrong[room_id(index)] = {"streamed": have, "emulator": want}
    return wrong


# --- set-up --------------------------------------------------------------------------------


async def _subscribe(
    store: SqlStore, emulator: dict[str, Any], cluster: Cluster, trust: ssl.SSLContext
) -> None:
    """Every room subscribed at Graph, as the customer's administrator does it: half the rooms'
    notifications go to ``api0``, half to ``api1``; the subscriptions are spread over several
    app registrations, each within Graph's 500 writes per 20 s."""
    registry = SqlSubscriptions(store, clock=SystemClock())
    client_state = "chaos-client-state-0123456789"
    await registry.rotate_client_state(TENANT, client_state)
    await subscribe_rooms(
        emulator,
        [mailbox(i) for i in range(ROOMS)],
        tenant=TENANT,
        service_urls=[cluster.url("api0"), cluster.url("api1")],
        client_state=client_state,
        registry=registry,
        verify=trust,
        apps=[emulator["apps"][f"subscriber{n}"] for n in range(SUBSCRIBING_APPS)],
        expires_in=dt.timedelta(days=2),
    )


async def _first_sync(store: SqlStore, cluster: Cluster) -> None:
    """Every room's first read, queued before the workers start (else their sweep would
    spread the 2,000 never-read calendars over minutes), then done by the three workers."""
    began = SystemClock().now()
    queue = SqlJobQueue(store, clock=SystemClock())
    await queue.enqueue({(TENANT, mailbox(i)): began for i in range(ROOMS)})
    workers = ["worker0", "worker1", "worker2"]
    await asyncio.gather(*(asyncio.to_thread(cluster.start, name) for name in workers))
    everyone = {mailbox(i) for i in range(ROOMS)}

    async def synced() -> bool:
        return everyone <= await fresh_since(store, began)

    await until(synced, timeout_s=180, what="every room's first sync", every_s=0.5)


@contextlib.asynccontextmanager
async def _opened(url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(url, box=sealing_box(), migrate=True, clock=SystemClock())
    try:
        yield store
    finally:
        await store.close()


# --- the faults ----------------------------------------------------------------------------


async def _kill_a_worker_mid_refresh(store: SqlStore, cluster: Cluster) -> tuple[int, float]:
    """SIGKILL the worker holding the most claims, and time until every calendar it was
    refreshing is fresh again; (how many it held, seconds)."""

    async def victim() -> str | None:
        held = {name: await claims_of(store, name) for name in ("worker0", "worker1", "worker2")}
        name, claims = max(held.items(), key=lambda item: len(item[1]))
        return name if len(claims) >= 3 else None

    name = await until(victim, timeout_s=30, what="a worker with refreshes in flight", every_s=0.05)
    cluster.children[name].kill()
    killed_at, killed_wall = time.monotonic(), SystemClock().now()
    # What the dead process had claimed and not finished: its rows stay locked by it.
    unfinished = await claims_of(store, name)
    assert unfinished, "the worker was killed with refreshes in flight"

    async def released() -> bool:
        return not await claims_of(store, name) & unfinished

    async def fresh_again() -> bool:
        return unfinished <= await fresh_since(store, killed_wall)

    await until(released, timeout_s=60, what="the killed worker's claims released", every_s=0.05)
    print(f"killed worker's claims released {time.monotonic() - killed_at:.2f} s after the kill")
    await until(fresh_again, timeout_s=60, what="the killed worker's calendars", every_s=0.05)
    took_s = time.monotonic() - killed_at
    await asyncio.to_thread(cluster.start, name)
    return len(unfinished), took_s


async def _kill_an_api_mid_burst(cluster: Cluster, traffic: Traffic) -> None:
    """A burst of changes to the rooms whose notifications go to ``api1``, which is killed
    while their notifications arrive, and started again a second later."""
    for room in traffic.rng.sample(range(1, ROOMS, 2), BURST):
        traffic.spawn(room)
    await asyncio.sleep(LATENCY_MS / 1000)
    cluster.children["api1"].kill()
    await asyncio.sleep(1)
    await asyncio.to_thread(cluster.start, "api1")


async def _stop_the_sweep_holder(store: SqlStore, cluster: Cluster) -> float:
    """SIGSTOP the process holding the sweep duty past its lease, SIGCONT it once a peer took
    the duty over, and check that the resumed process does not act on it; the takeover's
    seconds."""
    holder = await until(lambda: duty_holder(store, "sweep"), timeout_s=30, what="a sweep holder")
    runs_before = await asyncio.to_thread(cluster.runs, holder, "sweep")
    os.kill(cluster.children[holder].pid, signal.SIGSTOP)
    stopped_at = time.monotonic()

    async def taken_over() -> bool:
        now = await duty_holder(store, "sweep")
        return now is not None and now != holder

    await until(taken_over, timeout_s=DUTY_LEASE_S + DUTY_RENEW_S + 10, what="the sweep taken over")
    took_s = time.monotonic() - stopped_at
    await asyncio.sleep(max(0.0, DUTY_LEASE_S + 1 - took_s))  # stopped past its lease
    os.kill(cluster.children[holder].pid, signal.SIGCONT)
    await asyncio.sleep(SWEEP_INTERVAL_S * 2)
    assert await asyncio.to_thread(cluster.runs, holder, "sweep") == runs_before, (
        "the resumed process swept on a lease it had lost"
    )
    held = [duty["duty"] for duty in (await asyncio.to_thread(cluster.readiness, holder))["duties"]]
    assert "sweep" not in held
    return took_s


# --- the test ------------------------------------------------------------------------------


async def test_the_cluster_survives_its_faults_with_traffic_flowing(
    postgres: PrivatePostgres, emulator: dict[str, Any], tmp_path: Path
) -> None:
    url = postgres.url(DATABASE)
    trust = ssl.create_default_context(cafile=emulator["cert_path"])
    cluster = Cluster(url, emulator, tmp_path)
    async with (
        _opened(url) as store,
        httpx.AsyncClient(
            base_url=emulator["control_url"], verify=trust, timeout=30,
            limits=httpx.Limits(max_connections=64),
        ) as control,
    ):  # fmt: skip
        try:
            await graph_tenant(store, emulator["tenant_id"], [mailbox(i) for i in range(ROOMS)])
            await asyncio.gather(*(asyncio.to_thread(cluster.start, n) for n in ("api0", "api1")))
            await _subscribe(store, emulator, cluster, trust)
            await _first_sync(store, cluster)
            await _chaos(store, cluster, control, postgres)
        except BaseException:
            print(cluster.logs())
            with contextlib.suppress(Exception):
                print("--- pg_stat_activity\n" + await postgres.activity())
            raise
        finally:
            await asyncio.to_thread(cluster.close)


async def _chaos(
    store: SqlStore, cluster: Cluster, control: httpx.AsyncClient, postgres: PrivatePostgres
) -> None:
    traffic = Traffic(control)
    followers = {"api0": Follower(cluster.url("api0")), "api1": Follower(cluster.url("api1"))}
    await asyncio.gather(*(follower.connected() for follower in followers.values()))
    (await control.post("/counters/reset")).raise_for_status()
    # Graph's own faults while traffic flows: throttling, then outages, of any mailbox.
    fault = {"mailbox": "*", "kind": "throttle", "probability": 0.03, "retry_after_s": 1}
    (await control.post("/faults/mailboxes", json=fault)).raise_for_status()
    stop = asyncio.Event()
    flowing = asyncio.create_task(traffic.run(stop))
    try:
        await asyncio.sleep(5)
        held, fresh_s = await _kill_a_worker_mid_refresh(store, cluster)
        print(f"killed worker: {held} calendars in flight, all fresh again {fresh_s:.2f} s later")
        await _kill_an_api_mid_burst(cluster, traffic)
        fault = {"mailbox": "*", "kind": "unavailable", "probability": 0.03, "retry_after_s": 1}
        (await control.post("/faults/mailboxes", json=fault)).raise_for_status()
        await asyncio.sleep(3)
        ended = await postgres.terminate(DATABASE)
        print(f"ended {ended} database sessions")
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres.stop, "immediate")
        await asyncio.sleep(10)
        await asyncio.to_thread(postgres.start)
        restarted = time.monotonic()
        await until(
            lambda: asyncio.to_thread(cluster.all_ready),
            timeout_s=90,
            what="every process ready again after the database's restart",
            every_s=0.5,
        )
        print(f"every process ready {time.monotonic() - restarted:.1f} s after the restart")
        takeover_s = await _stop_the_sweep_holder(store, cluster)
        print(f"sweep duty taken over {takeover_s:.2f} s after its holder stopped")
    finally:
        stop.set()
        await flowing
    (await control.delete("/faults/mailboxes")).raise_for_status()
    assert traffic.failures == []
    print(f"{traffic.changes} changes made")

    # Every calendar converges to the emulator's truth; nothing is left to do.
    wrong: dict[str, Any] = {}

    async def converged() -> bool:
        nonlocal wrong
        wrong = await _differences(store, traffic)
        return not wrong and await _pending_jobs(store) == 0

    try:
        await until(converged, timeout_s=120, what="every calendar converged", every_s=1)
    except AssertionError:
        counters = (await control.get("/counters")).json()
        delivery = (await control.get("/delivery")).json()
        raise AssertionError(
            f"{len(wrong)} calendars differ from the emulator: {list(wrong.items())[:5]}; "
            f"pending jobs {await _pending_jobs(store)}, theirs "
            f"{await _jobs_of(store, list(wrong))}; emulator counters "
            f"{ {k: v for k, v in counters.items() if k.startswith(('notif', 'endpoints'))} }; "
            f"delivery {delivery}"
        ) from None
    assert fresh_s <= FRESH_AFTER_KILL_S, f"the killed worker's calendars took {fresh_s:.2f} s"
    assert takeover_s <= DUTY_LEASE_S + TAKEOVER_SLACK_S

    # Every notification Graph had answered 2xx is in the inbox.
    counters = (await control.get("/counters")).json()
    stored = len(await SqlInbox(store, jobs=SqlJobQueue(store, clock=SystemClock()),
                                clock=SystemClock()).notifications(TENANT))  # fmt: skip
    assert counters["notifications_sent"] > traffic.changes
    assert stored >= counters["notifications_sent"], (stored, counters["notifications_sent"])
    # Graph's limits were kept, and no calendar was read by two refreshes at once.
    peaks = counters["max_concurrency_per_mailbox"]
    assert max(peaks.values()) <= 1, sorted(peaks.items(), key=lambda kv: -kv[1])[:5]

    # Each stream client, on either API process, shows every room as the emulator has it.
    for name, follower in followers.items():

        async def streamed(follower: Follower = follower) -> bool:
            return not _streamed_wrong(follower, traffic)

        try:
            await until(streamed, timeout_s=30, what=f"{name}'s stream client", every_s=0.5)
        except AssertionError:
            wrong = _streamed_wrong(follower, traffic)
            raise AssertionError(
                f"{name}'s stream client ({follower.connects} connections) shows {len(wrong)} "
                f"rooms otherwise than the emulator: {list(wrong.items())[:5]}"
            ) from None
        await follower.close()

    # Once per period across the cluster.
    window_s = 5 * SWEEP_INTERVAL_S
    # Retention runs with the sweep's pass; the silence duty reads the feed at least every
    # SILENCE_PERIOD_S, each read taking its own time, so only its upper bound is tight.
    periods = {
        "sweep": SWEEP_INTERVAL_S,
        "retention": SWEEP_INTERVAL_S,
        "converge": TICK_S,
        "silence": SILENCE_PERIOD_S,
    }
    before = {d: await asyncio.to_thread(cluster.duty_runs, d) for d in periods}
    await asyncio.sleep(window_s)
    after = {d: await asyncio.to_thread(cluster.duty_runs, d) for d in periods}
    for duty, period_s in periods.items():
        ran = after[duty] - before[duty]
        lowest = window_s / period_s / 2 if duty == "silence" else window_s / period_s - 2
        assert lowest <= ran <= window_s / period_s + 1, (duty, ran)
