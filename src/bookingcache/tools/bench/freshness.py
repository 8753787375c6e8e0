"""``bookingcache bench freshness``: how long a change in Microsoft 365 takes to show in the
availability API, end to end through real processes.

A Graph emulator (``graph-emulator``, TLS) holds the room mailboxes and delivers change
notifications to the service's Alternative 1 intake over loopback HTTP; the service
(``bookingcache serve``, its worker reading Graph over MSAL and calendarView delta) refreshes the
cache. With ``--alternative 2`` the emulator notifies the customer's connector (its ASGI app
under uvicorn, a process of its own), whose relay calls the service; with ``--source connector``
the worker reads the calendars through the connector, with ``--source push`` the relay's calls
carry them. The connector then creates the subscriptions, as the service's orchestration asks.

The benchmark books, moves and cancels meetings through the emulator's control API at a
fixed rate and polls the bulk availability API for the rooms with changes still unseen. A
change's latency runs from just before its control call to the first availability answer that
shows it; a change never seen within the settle time counts as lost. Graph requests per change
come from the emulator's per-mailbox request counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bookingcache.clock import SystemClock
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from bookingcache.tools import processes
from bookingcache.tools.bench.http import BenchError
from bookingcache.tools.processes import (
    NotAnswering,
    command,
    free_port,
    serve_command,
    wait_answering,
    worker_ready,
)

TENANT = "bench"
ADMIN_TOKEN = "bench-admin-" + "0123456789abcdef"
ORGANIZER = "organizer@bench.example"
SLOT = dt.timedelta(minutes=30)
BOOKING = dt.timedelta(minutes=15)
SLOTS_PER_ROOM = 10 * 48


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench freshness", description=__doc__)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of changes")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait after")
    parser.add_argument("--poll-ms", type=float, default=25.0, help="availability polling")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url",
        help="an EMPTY database for the service (default: SQLite in a temporary directory)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="run intake and API (serve --no-worker) and the worker (bookingcache worker) "
        "as two processes on the one database",
    )
    parser.add_argument(
        "--alternative",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: Graph notifies the service; 2: Graph notifies the connector's relay",
    )
    parser.add_argument(
        "--source",
        choices=("graph", "connector", "push"),
        default="graph",
        help="the tenant's event source (push needs --alternative 2)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _uses_connector(args: argparse.Namespace) -> bool:
    return bool(args.alternative == 2 or args.source != "graph")


# --- processes -------------------------------------------------------------------------------


def _emulator_ready(line: str) -> bool:
    """The emulator's first line: its addresses and apps as JSON."""
    return line.startswith("{")


def _seed_file(path: Path, rooms: int) -> None:
    mailboxes: list[dict[str, Any]] = [
        {
            "upn": _mailbox(index),
            "display_name": f"Room {index:04d}",
            "time_zone": "Europe/Berlin",
            "is_room": True,
            "building": "HQ",
            "floor": index // 100,
        }
        for index in range(rooms)
    ]
    mailboxes.append({"upn": ORGANIZER, "display_name": "Bench Organizer"})
    apps = [{"name": "full", "display_name": "bookingcache", "roles": ["Calendars.Read"]}]
    path.write_text(json.dumps({"mailboxes": mailboxes, "apps": apps}), encoding="utf-8")


def _mailbox(index: int) -> str:
    return f"room-{index:04d}@bench.example"


def _room_id(index: int) -> str:
    return f"room-{index:04d}"


# --- the run ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Change:
    room: int
    busy: tuple[dt.datetime, dt.datetime] | None  # must show as busy
    free: tuple[dt.datetime, dt.datetime] | None  # must no longer show as busy
    sent: float
    booking: str | None = None
    slot: int | None = None  # the slot the booking holds once this change is seen
    seen: float | None = None


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _covered(
    span: tuple[dt.datetime, dt.datetime], busy: list[tuple[dt.datetime, dt.datetime]]
) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in busy)


class Run:
    def __init__(
        self, args: argparse.Namespace, service: str, control: str, verify: ssl.SSLContext
    ) -> None:
        self.args = args
        self.service = httpx.AsyncClient(
            base_url=service,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
            limits=httpx.Limits(max_connections=8),
        )
        self.control = httpx.AsyncClient(
            base_url=control, verify=verify, timeout=30, limits=httpx.Limits(max_connections=32)
        )
        self.rng = random.Random(args.seed)  # noqa: S311 (a reproducible workload)
        self.driven = False
        self.drained = asyncio.Event()
        self.changes: list[Change] = []
        self.pending: list[Change] = []
        # room -> booking id -> slot index, for bookings whose creation was seen
        self.bookings: dict[int, dict[str, int]] = {}
        self.free_slots: dict[int, list[int]] = {}
        base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.first_slot = base + dt.timedelta(days=1)
        self.window = (base, base + dt.timedelta(days=12))
        self.failures = 0
        self.poll_errors = 0

    def span(self, slot: int) -> tuple[dt.datetime, dt.datetime]:
        start = self.first_slot + slot * SLOT
        return start, start + BOOKING

    def take_slot(self, room: int) -> int:
        slots = self.free_slots.setdefault(room, list(range(SLOTS_PER_ROOM)))
        return slots.pop(self.rng.randrange(len(slots)))

    async def mutate(self) -> None:
        room = self.rng.randrange(self.args.rooms)
        mailbox = _mailbox(room)
        confirmed = self.bookings.get(room, {})
        roll = self.rng.random()
        sent = time.perf_counter()
        body: dict[str, str] | None = None
        if confirmed and roll < 0.25:
            booking, old = self.rng.choice(list(confirmed.items()))
            del confirmed[booking]
            new = self.take_slot(room)
            change = Change(room, self.span(new), self.span(old), sent, booking, slot=new)
            start, end = self.span(new)
            method, path = "POST", f"/mailboxes/{mailbox}/events/{booking}/move"
            body = {"start": _iso(start), "end": _iso(end)}
        elif confirmed and roll < 0.40:
            booking, old = self.rng.choice(list(confirmed.items()))
            del confirmed[booking]
            change = Change(room, None, self.span(old), sent, booking)
            method, path = "DELETE", f"/mailboxes/{mailbox}/events/{booking}"
        else:
            slot = self.take_slot(room)
            start, end = self.span(slot)
            change = Change(room, (start, end), None, sent, slot=slot)
            method, path = "POST", f"/mailboxes/{mailbox}/bookings"
            body = {
                "organizer": ORGANIZER,
                "subject": "Bench",
                "start": _iso(start),
                "end": _iso(end),
            }
        self.pending.append(change)
        try:
            response = await self.control.request(method, path, json=body)
        except httpx.TransportError:
            response = None
        if response is None or response.status_code >= 300:
            # Not a change the service could ever show: left out of the figures, counted.
            self.failures += 1
            if change in self.pending:
                self.pending.remove(change)
            return
        if change.booking is None:
            change.booking = str(response.json()["id"])
        if change.free is not None:
            self.free_slots[room].append(self.slot_of(change.free))
        self.changes.append(change)

    def slot_of(self, span: tuple[dt.datetime, dt.datetime]) -> int:
        return int((span[0] - self.first_slot) / SLOT)

    async def observe_once(self) -> None:
        if not self.pending:
            if self.driven:
                self.drained.set()
            return
        rooms = sorted({change.room for change in self.pending})
        try:
            response = await self.service.post(
                f"/v1/tenants/{TENANT}/availability",
                json={
                    "rooms": [_room_id(room) for room in rooms],
                    "start": _iso(self.window[0]),
                    "end": _iso(self.window[1]),
                },
            )
        except httpx.TransportError:
            self.poll_errors += 1
            return
        now = time.perf_counter()
        if response.status_code != 200:
            raise BenchError(f"availability answered {response.status_code}: {response.text[:300]}")
        busy: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {}
        for answer in response.json()["rooms"]:
            index = int(answer["room_id"].split("-")[1])
            busy[index] = [
                (dt.datetime.fromisoformat(span["start"]), dt.datetime.fromisoformat(span["end"]))
                for span in answer["busy"]
            ]
        still: list[Change] = []
        for change in self.pending:
            spans = busy.get(change.room, [])
            shown = (change.busy is None or _covered(change.busy, spans)) and (
                change.free is None or not _covered(change.free, spans)
            )
            if shown and change.booking is not None:
                change.seen = now
                if change.slot is not None:
                    # Seen: a later move or cancel may pick this booking.
                    self.bookings.setdefault(change.room, {})[change.booking] = change.slot
            else:
                still.append(change)
        self.pending = still
        if self.driven and not self.pending:
            self.drained.set()

    async def drive(self) -> None:
        interval = 1 / self.args.rate
        total = int(self.args.rate * self.args.duration)
        began = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()
        for number in range(total):
            delay = began + number * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.mutate())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def observe(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.observe_once()
            await asyncio.sleep(self.args.poll_ms / 1000)

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.control.aclose()


def _admin(service_url: str) -> httpx.AsyncClient:
    """A client of the service's admin API, for the set-up."""
    return httpx.AsyncClient(
        base_url=service_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    )


async def _create_tenant(
    args: argparse.Namespace, service_url: str, connector_url: str | None
) -> str:
    """The tenant, without rooms yet (so nothing asks the connector for subscriptions before
    it runs); returns the tenant's signing secret, which the connector needs."""
    async with _admin(service_url) as service:
        created = await service.post(
            "/v1/tenants",
            json={
                "id": TENANT,
                "name": "Bench",
                "event_source": args.source,
                "connector_url": connector_url,
                "default_time_zone": "Europe/Berlin",
            },
        )
        if created.status_code != 201:
            raise BenchError(f"creating the tenant failed: {created.text[:300]}")
        secret: str = created.json()["secrets"]["signing_secret"]
        return secret


async def _import_rooms(args: argparse.Namespace, service_url: str) -> None:
    async with _admin(service_url) as service:
        rooms = [
            {
                "room_id": _room_id(i),
                "mailbox": _mailbox(i),
                "name": f"Room {i:04d}",
                "building": "HQ",
            }
            for i in range(args.rooms)
        ]
        imported = await service.post(f"/v1/tenants/{TENANT}/rooms:import", json={"rooms": rooms})
        if imported.status_code != 200:
            raise BenchError(f"importing rooms failed: {imported.text[:300]}")


async def _first_sync(
    args: argparse.Namespace,
    info: dict[str, Any],
    service_url: str,
    database_url: str,
    verify: ssl.SSLContext,
) -> None:
    """Every room subscribed and its calendar read once. Without the connector the benchmark
    subscribes each room at Graph itself; with it, the service's orchestration has the
    connector do it (and, for ``push``, the connector's reconciliation pushes each window)."""
    store = await open_store(database_url, migrate=False)
    try:
        if _uses_connector(args):
            await _wait(
                lambda: _all_subscribed(service_url, args.rooms), "the connector's subscriptions"
            )
        else:
            registry = SqlSubscriptions(store, clock=SystemClock())
            client_state = secrets.token_urlsafe(24)
            await registry.rotate_client_state(TENANT, client_state)
            await _subscribe(args, info, service_url, client_state, registry, verify)
        if args.source != "push":
            queue = SqlJobQueue(store, clock=SystemClock())
            now = dt.datetime.now(dt.UTC)
            await queue.enqueue({(TENANT, _mailbox(i)): now for i in range(args.rooms)})

        async def read() -> bool:
            calendars = await store.list_calendars(TENANT)
            return all(c.last_success_at is not None for c in calendars)

        await _wait(read, "the first sync of the rooms")
    finally:
        await store.close()


async def _all_subscribed(service_url: str, rooms: int) -> bool:
    async with _admin(service_url) as service:
        answer = await service.get(f"/v1/tenants/{TENANT}/subscriptions")
    if answer.status_code != 200:
        raise BenchError(f"reading the subscriptions failed: {answer.text[:300]}")
    subscribed = [row for row in answer.json()["calendars"] if row["subscription_id"]]
    return len(subscribed) >= rooms


async def _wait(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not finish in {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


async def _subscribe(
    args: argparse.Namespace,
    info: dict[str, Any],
    service_url: str,
    client_state: str,
    registry: SqlSubscriptions,
    verify: ssl.SSLContext,
) -> None:
    async with httpx.AsyncClient(verify=verify, timeout=30) as graph:
        token = await graph.post(
            f"{info['authority']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": info["apps"]["full"]["client_id"],
                "client_secret": info["apps"]["full"]["client_secret"],
                "scope": "https://graph.microsoft.com/.default",
            },
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        todo = list(range(args.rooms))

        async def one(index: int) -> None:
            while True:
                response = await graph.post(
                    f"{info['base_url']}/subscriptions",
                    headers=headers,
                    json={
                        "changeType": "created,updated,deleted",
                        "notificationUrl": f"{service_url}/graph/notifications/{TENANT}",
                        "lifecycleNotificationUrl": f"{service_url}/graph/lifecycle/{TENANT}",
                        "resource": f"users/{_mailbox(index)}/events",
                        "expirationDateTime": expires,
                        "clientState": client_state,
                    },
                )
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code != 201:
                    raise BenchError(f"creating a subscription failed: {response.text[:300]}")
                body = response.json()
                await registry.record(
                    TENANT,
                    _mailbox(index),
                    body["id"],
                    expires_at=dt.datetime.fromisoformat(
                        body["expirationDateTime"].replace("Z", "+00:00")
                    ),
                )
                return

        while todo:
            batch, todo = todo[:16], todo[16:]
            await asyncio.gather(*(one(index) for index in batch))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure(
    args: argparse.Namespace, info: dict[str, Any], service_url: str, verify: ssl.SSLContext
) -> dict[str, Any]:
    run = Run(args, service_url, info["control_url"], verify)
    try:
        await run.control.post("/counters/reset")
        stop = asyncio.Event()
        observer = asyncio.create_task(run.observe(stop))
        await run.drive()
        run.driven = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.drained.wait(), timeout=args.settle)
        stop.set()
        await observer
        counters = (await run.control.get("/counters")).json()
    finally:
        await run.aclose()
    latencies = [(c.seen - c.sent) * 1000 for c in run.changes if c.seen is not None]
    requests = sum(counters.get("requests_per_mailbox", {}).values())
    if not latencies:
        raise BenchError("no change became visible")
    return {
        "rooms": args.rooms,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "mutations": len(run.changes),
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "graph_requests_per_mutation": round(requests / max(1, len(run.changes)), 3),
        "graph_throttled": counters.get("throttled", 0),
        "lost": len(run.pending),
        "control_failures": run.failures,
        "poll_errors": run.poll_errors,
        "split": args.split,
        "alternative": args.alternative,
        "source": args.source,
    }


def _connector_env(
    args: argparse.Namespace, info: dict[str, Any], root: Path, service_url: str, secret: str
) -> dict[str, str]:
    return {
        **os.environ,
        "CONNECTOR_TENANT_ID": str(info["tenant_id"]),
        "CONNECTOR_CLIENT_ID": info["apps"]["full"]["client_id"],
        "CONNECTOR_CLIENT_SECRET": info["apps"]["full"]["client_secret"],
        "CONNECTOR_AUTHORITY": info["authority"].rsplit("/", 1)[0],
        "CONNECTOR_GRAPH_URL": info["base_url"],
        "CONNECTOR_CA_BUNDLE": info["cert_path"],
        "CONNECTOR_WEBHOOK_SECRET": secret,
        "CONNECTOR_SERVICE_URL": service_url,
        "CONNECTOR_SERVICE_TENANT": TENANT,
        "CONNECTOR_STATE_DIR": str(root / "connector"),
        "CONNECTOR_PUSH_EVENTS": "true" if args.source == "push" else "false",
        # The first push of every room's window as fast as the emulator takes it; after that
        # the reconciliation is not due within the run.
        "CONNECTOR_PUSH_RECONCILE_RATE": "200",
        "CONNECTOR_RENEW_EVERY_S": "0",
    }


def _connector_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bookingcache_connector.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip


@contextmanager
def _child(
    argv: list[str],
    env: Mapping[str, str],
    *,
    log: Path,
    ready: Callable[[str], bool] | None = None,
) -> Iterator[processes.Child]:
    """A child of the benchmark, once ready (its ``listening on`` banner by default)."""
    try:
        with processes.running(argv, env=env, log=log, ready=ready) as child:
            yield child
    except NotAnswering as exc:
        raise BenchError(f"{Path(argv[2] if len(argv) > 2 else argv[0]).name}: {exc}") from exc


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.source == "push" and args.alternative != 2:
        parser.error(
            "--source push needs --alternative 2: Graph's own notifications carry no events"
        )
    with tempfile.TemporaryDirectory(prefix="bookingcache-freshness-") as tmp:
        root = Path(tmp)
        seed = root / "seed.json"
        _seed_file(seed, args.rooms)
        emulator_command = [
            sys.executable, "-m", "graph_emulator.cli", "--seed", str(seed), "--tls",
            "--tls-dir", str(root / "tls"), "--allow-http-notifications", "--port", "0",
        ]  # fmt: skip
        with _child(
            emulator_command, os.environ, log=root / "emulator.log", ready=_emulator_ready
        ) as emulator:
            info: dict[str, Any] = json.loads(emulator.banner)
            authority_root = info["authority"].rsplit("/", 1)[0]
            data_dir = root / "service"
            database_url = args.database_url or f"sqlite:///{data_dir / 'bookingcache.db'}"
            env = {
                "BOOKINGCACHE_LOG_LEVEL": "WARNING",
                **os.environ,
                "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
                "BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID": info["apps"]["full"]["client_id"],
                "BOOKINGCACHE_SYNC_GRAPH__CLIENT_SECRET": info["apps"]["full"]["client_secret"],
                "BOOKINGCACHE_SYNC_GRAPH__AUTHORITY_HOST": authority_root,
                "BOOKINGCACHE_SYNC_GRAPH__GRAPH_BASE_URL": info["base_url"],
                "BOOKINGCACHE_SYNC_GRAPH__CA_BUNDLE": info["cert_path"],
                "BOOKINGCACHE_SYNC_GRAPH__TENANTS": json.dumps(
                    {TENANT: {"directory_tenant": info["tenant_id"]}}
                ),
                "BOOKINGCACHE_ORCHESTRATION_NOTIFICATION_MODES": json.dumps(
                    {TENANT: "relay" if args.alternative == 2 else "direct"}
                ),
                "BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S": "0.5",
            }
            connector_port = free_port() if _uses_connector(args) else None
            connector_url = f"http://127.0.0.1:{connector_port}" if connector_port else None
            service_command = serve_command(data_dir, "--database-url", database_url)
            worker_command = command(
                "worker", "--data-dir", str(data_dir), "--database-url", database_url
            )
            if args.split:
                service_command.append("--no-worker")
            with contextlib.ExitStack() as stack:
                service = stack.enter_context(
                    _child(service_command, env, log=root / "service.log")
                )
                if args.split:  # started once the service has migrated the database
                    stack.enter_context(
                        _child(worker_command, env, log=root / "worker.log", ready=worker_ready)
                    )
                service_url = service.banner_url
                verify = ssl.create_default_context(cafile=info["cert_path"])
                try:
                    secret = asyncio.run(_create_tenant(args, service_url, connector_url))
                    if connector_port is not None and connector_url is not None:
                        connector = processes.start(
                            _connector_command(connector_port),
                            env=_connector_env(args, info, root, service_url, secret),
                            log=root / "connector.log",
                        )
                        stack.callback(connector.stop)
                        try:
                            wait_answering(
                                connector.process, f"{connector_url}/healthz", timeout_s=30
                            )
                        except NotAnswering as exc:
                            raise BenchError(f"the connector {exc}") from exc
                    asyncio.run(_import_rooms(args, service_url))
                    asyncio.run(_first_sync(args, info, service_url, database_url, verify))
                    result = asyncio.run(_measure(args, info, service_url, verify))
                    if os.environ.get("BOOKINGCACHE_BENCH_KEEP_LOG"):
                        Path(os.environ["BOOKINGCACHE_BENCH_KEEP_LOG"]).write_text(
                            (root / "service.log").read_text()
                        )
                except BenchError:
                    for name in ("service", "connector"):
                        if (root / f"{name}.log").exists():
                            sys.stderr.write((root / f"{name}.log").read_text()[-3000:])
                    raise
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>28}: {value}")
    return 0
