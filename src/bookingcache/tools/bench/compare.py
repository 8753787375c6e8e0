"""``bookingcache bench compare``: bookingcache's freshness and Graph cost beside the pollers
customers run today, on the same activity in the same run.

One Graph emulator (TLS, loopback) holds the rooms (1,000 in two buildings by default) and plays
an office day on them (``office.py``): a busy window (an office hour's changes) and then a quiet
one, each ``--window-s`` seconds of real time. Five contenders follow it, each with an app
registration of its own at the emulator, which counts every contender's Graph requests apart
(``$batch`` members one each), whoever makes them:

- ``bookingcache-alt1-graph``: Graph notifies the service, which reads the calendars itself;
- ``bookingcache-alt2-connector``: Graph notifies the customer's connector, whose relay calls
  the service, which reads the calendars through the connector;
- ``bookingcache-alt2-push``: as above, the relay's calls carrying the events;
- ``poll-calendarview``: a room-display poller, one calendarView read per room per interval;
- ``poll-getschedule``: a map-platform poller, getSchedule in batches of 20 per interval.

Every bookingcache contender is its own ``bookingcache serve`` process (its own SQLite database;
with its own connector process for Alternative 2); every poller its own process
(``pollers.py``). A change's staleness runs from just before its control call at the emulator to
the first moment the contender shows it: for bookingcache the first answer of the bulk
availability API that shows it (asked every ``--observe-ms`` for the rooms with changes not yet
shown), for a poller the moment its own view took it in. A change not shown within the end of
its window plus the grace period counts as never shown. CPU seconds are the user and system time
of the contender's processes over the windows (/proc), all contenders running at once.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bookingcache.tools import processes
from bookingcache.tools.bench import freshness
from bookingcache.tools.bench.activity import ADMIN_TOKEN, ORGANIZER, TENANT, mailbox, room_id
from bookingcache.tools.bench.http import BenchError, percentile, report
from bookingcache.tools.bench.office import Change, Office, shows
from bookingcache.tools.bench.pollers import READY
from bookingcache.tools.processes import NotAnswering, free_port, serve_command

REQUESTER = "scheduler@bench.example"
# name -> (alternative, event source) for bookingcache; the pollers' kinds.
SERVICES = {
    "bookingcache-alt1-graph": (1, "graph"),
    "bookingcache-alt2-connector": (2, "connector"),
    "bookingcache-alt2-push": (2, "push"),
}
POLLERS = {"poll-calendarview": "calendarview", "poll-getschedule": "getschedule"}
WINDOWS = ("busy", "quiet")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench compare", description=__doc__)
    parser.add_argument("--rooms", type=int, default=1000, help="rooms, in two buildings")
    parser.add_argument("--window-s", type=float, default=300.0, help="seconds per window")
    parser.add_argument("--poll-interval-s", type=float, default=60.0, help="the pollers'")
    parser.add_argument(
        "--grace-s", type=float, help="after a window (default: two poll intervals)"
    )
    parser.add_argument(
        "--busy-per-room-hour", type=float, default=2.0, help="changes in the busy window"
    )
    parser.add_argument(
        "--quiet-per-room-hour", type=float, default=0.2, help="changes in the quiet window"
    )
    parser.add_argument("--observe-ms", type=float, default=100.0, help="availability polling")
    parser.add_argument(
        "--debounce-s", type=float, default=0.5, help="the services' notification debounce"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plot", type=Path, help="draw the figures into this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# --- the contenders' processes ---------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Contender:
    def __init__(self, name: str, client_id: str) -> None:
        self.name = name
        self.client_id = client_id
        self.pids: list[int] = []
        self.url = ""  # a bookingcache service's
        self.view_file: Path | None = None  # a poller's
        self.pending: dict[int, list[Change]] = {}
        # A service's: what freshness's first-sync helper takes (options, app info, database).
        self.setup: tuple[argparse.Namespace, dict[str, Any], str] | None = None

    def cpu_s(self) -> float:
        return sum(_cpu_s(pid) for pid in self.pids)

    def expect(self, change: Change) -> None:
        self.pending.setdefault(change.room, []).append(change)

    def show(self, room: int, at: float, busy: list[tuple[float, float]]) -> None:
        """The contender shows ``busy`` for ``room`` from ``at`` on."""
        waiting = self.pending.get(room)
        if not waiting:
            return
        still = []
        for change in waiting:
            if change.sent < 0:
                continue  # its control call failed
            if change.sent < at and shows(change, busy):
                change.seen[self.name] = at
            else:
                still.append(change)
        self.pending[room] = still


def _seed_file(path: Path, rooms: int) -> None:
    half = (rooms + 1) // 2
    mailboxes: list[dict[str, Any]] = [
        {
            "upn": mailbox(index),
            "display_name": f"Room {index:04d}",
            "time_zone": "Europe/Berlin",
            "is_room": True,
            "building": "North" if index < half else "South",
            "floor": (index % half) // 100,
        }
        for index in range(rooms)
    ]
    mailboxes += [
        {"upn": ORGANIZER, "display_name": "Bench Organizer"},
        {"upn": REQUESTER, "display_name": "Scheduling Service"},
    ]
    apps = [
        {"name": name, "display_name": name, "roles": ["Calendars.Read"]}
        for name in (*SERVICES, *POLLERS)
    ]
    path.write_text(json.dumps({"mailboxes": mailboxes, "apps": apps}), encoding="utf-8")


def _service_env(
    info: dict[str, Any], app: dict[str, str], alternative: int, debounce: float
) -> dict[str, str]:
    return {
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
        **os.environ,
        "BOOKINGCACHE_ENVIRONMENT": "development",  # everything on loopback over http
        "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOOKINGCACHE_SECRETS_KEY": freshness.SECRETS_KEY,
        "BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID": app["client_id"],
        "BOOKINGCACHE_SYNC_GRAPH__CLIENT_SECRET": app["client_secret"],
        "BOOKINGCACHE_SYNC_GRAPH__AUTHORITY_HOST": info["authority"].rsplit("/", 1)[0],
        "BOOKINGCACHE_SYNC_GRAPH__GRAPH_BASE_URL": info["base_url"],
        "BOOKINGCACHE_SYNC_GRAPH__CA_BUNDLE": info["cert_path"],
        "BOOKINGCACHE_SYNC_GRAPH__TENANTS": json.dumps(
            {TENANT: {"directory_tenant": info["tenant_id"]}}
        ),
        "BOOKINGCACHE_ORCHESTRATION_NOTIFICATION_MODES": json.dumps(
            {TENANT: "relay" if alternative == 2 else "direct"}
        ),
        "BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S": str(debounce),
    }


async def _import_rooms(service_url: str, rooms: int) -> None:
    half = (rooms + 1) // 2
    body = {
        "rooms": [
            {
                "room_id": room_id(i),
                "mailbox": mailbox(i),
                "name": f"Room {i:04d}",
                "building": "North" if i < half else "South",
                "floor": str((i % half) // 100),
            }
            for i in range(rooms)
        ]
    }
    async with freshness._admin(service_url) as service:
        imported = await service.post(f"/v1/tenants/{TENANT}/rooms:import", json=body)
    if imported.status_code != 200:
        raise BenchError(f"importing rooms failed: {imported.text[:300]}")


def _start_services(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    info: dict[str, Any],
    root: Path,
    services: list[Contender],
) -> None:
    """The contenders' services (and connectors), started side by side, their tenants
    created; the rooms are imported later, once the calendars are seeded."""
    started: list[tuple[Contender, processes.Child]] = []
    for contender in services:
        alternative, _ = SERVICES[contender.name]
        data_dir = root / contender.name
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'bookingcache.db'}"
        env = _service_env(info, info["apps"][contender.name], alternative, args.debounce_s)
        child = processes.start(
            serve_command(data_dir, "--database-url", database_url),
            env=env,
            log=data_dir / "service.log",
        )
        stack.callback(child.stop)
        started.append((contender, child))
        alternative, source = SERVICES[contender.name]
        options = argparse.Namespace(rooms=args.rooms, alternative=alternative, source=source)
        # freshness's helpers read the app's credentials under "full".
        own = {**info, "apps": {"full": info["apps"][contender.name]}}
        contender.setup = (options, own, database_url)
    connectors: list[tuple[Contender, processes.Child, str]] = []
    for contender, child in started:
        try:
            child.listening(timeout_s=120)
        except NotAnswering as exc:
            raise BenchError(f"{contender.name}: {exc}") from exc
        contender.url = child.banner_url
        contender.pids.append(child.pid)
        assert contender.setup is not None
        options, own, _ = contender.setup
        port = free_port()
        connector_url = f"http://127.0.0.1:{port}" if options.alternative == 2 else None
        secret = asyncio.run(freshness._create_tenant(options, contender.url, connector_url))
        if connector_url is not None:
            connector = processes.start(
                freshness._connector_command(port),
                env=freshness._connector_env(
                    options, own, root / contender.name, contender.url, secret
                ),
                log=root / contender.name / "connector.log",
            )
            stack.callback(connector.stop)
            contender.pids.append(connector.pid)
            connectors.append((contender, connector, connector_url))
    for contender, connector, url in connectors:
        try:
            processes.wait_answering(connector.process, f"{url}/healthz", timeout_s=120)
        except NotAnswering as exc:
            raise BenchError(f"{contender.name}'s connector {exc}") from exc


async def _first_syncs(contenders: list[Contender], verify: ssl.SSLContext) -> None:
    """Every contender's rooms imported, subscribed and read once."""

    async def one(contender: Contender) -> None:
        assert contender.setup is not None
        options, own, database_url = contender.setup
        await _import_rooms(contender.url, options.rooms)
        await freshness._first_sync(options, own, contender.url, database_url, verify)

    await asyncio.gather(*(one(c) for c in contenders))


def _start_poller(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    info: dict[str, Any],
    root: Path,
    office: Office,
    contender: Contender,
) -> None:
    listing = root / "rooms.txt"
    if not listing.exists():
        listing.write_text("".join(f"{mailbox(i)}\n" for i in range(args.rooms)))
    app = info["apps"][contender.name]
    contender.view_file = root / f"{contender.name}.jsonl"
    argv = [
        sys.executable, "-m", "bookingcache.tools.bench.pollers", POLLERS[contender.name],
        "--graph-url", info["base_url"], "--authority", info["authority"],
        "--client-id", app["client_id"], "--ca-bundle", info["cert_path"],
        "--mailboxes", str(listing), "--requester", REQUESTER,
        "--interval-s", str(args.poll_interval_s),
        "--window-start", str(office.view[0]), "--window-end", str(office.view[1]),
        "--out", str(contender.view_file),
    ]  # fmt: skip
    env = {**os.environ, "BENCH_POLLER_CLIENT_SECRET": app["client_secret"]}
    child = stack.enter_context(
        freshness._child(
            argv, env, log=root / f"{contender.name}.log", ready=lambda line: line.startswith(READY)
        )
    )
    contender.pids.append(child.pid)


# --- watching the contenders -----------------------------------------------------------------


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _watch_service(contender: Contender, office: Office, every_s: float) -> None:
    start, end = (dt.datetime.fromtimestamp(t, dt.UTC).isoformat() for t in office.view)
    async with freshness._admin(contender.url) as client:
        while True:
            rooms = sorted(room for room, waiting in contender.pending.items() if waiting)
            if rooms:
                answer = await client.post(
                    f"/v1/tenants/{TENANT}/availability",
                    json={"rooms": [room_id(r) for r in rooms], "start": start, "end": end},
                )
                at = time.monotonic()
                if answer.status_code != 200:
                    raise BenchError(f"{contender.name}: availability {answer.status_code}")
                for row in answer.json()["rooms"]:
                    busy = [(_epoch(s["start"]), _epoch(s["end"])) for s in row["busy"]]
                    contender.show(int(row["room_id"].split("-")[1]), at, busy)
            await asyncio.sleep(every_s)


async def _watch_poller(contender: Contender) -> None:
    assert contender.view_file is not None
    with contender.view_file.open(encoding="utf-8") as lines:
        while True:
            line = lines.readline()
            if not line.endswith("\n"):
                if line:
                    lines.seek(lines.tell() - len(line.encode()))
                await asyncio.sleep(0.25)
                continue
            row = json.loads(line)
            contender.show(row["room"], row["t"], [tuple(span) for span in row["busy"]])


async def _counters(control: httpx.AsyncClient) -> dict[str, Any]:
    answer = await control.get("/counters")
    counters: dict[str, Any] = answer.json()
    return counters


async def _measure(
    args: argparse.Namespace, info: dict[str, Any], office: Office, contenders: list[Contender]
) -> dict[str, Any]:
    verify = ssl.create_default_context(cafile=info["cert_path"])
    grace = args.grace_s if args.grace_s is not None else 2 * args.poll_interval_s
    watchers = [
        asyncio.create_task(
            _watch_service(c, office, args.observe_ms / 1000)
            if c.view_file is None
            else _watch_poller(c)
        )
        for c in contenders
    ]

    def expect(change: Change) -> None:
        for contender in contenders:
            contender.expect(change)

    marks: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(
        base_url=info["control_url"], verify=verify, timeout=30
    ) as control:
        try:
            rates = {"busy": args.busy_per_room_hour, "quiet": args.quiet_per_room_hour}
            for window in WINDOWS:
                began, before = time.monotonic(), await _counters(control)
                cpu = {c.name: c.cpu_s() for c in contenders}
                per_hour = rates[window] * args.rooms
                await office.drive(control, window, per_hour, args.window_s, expect)
                after = await _counters(control)
                marks[window] = {
                    "seconds": time.monotonic() - began,
                    "ended": time.monotonic(),
                    "requests": {
                        c.name: after["requests_per_app"].get(c.client_id, 0)
                        - before["requests_per_app"].get(c.client_id, 0)
                        for c in contenders
                    },
                    "throttled": {
                        c.name: after["throttled_per_app"].get(c.client_id, 0)
                        - before["throttled_per_app"].get(c.client_id, 0)
                        for c in contenders
                    },
                    "cpu_s": {c.name: c.cpu_s() - cpu[c.name] for c in contenders},
                }
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not any(any(c.pending.values()) for c in contenders):
                    break
                await asyncio.sleep(0.5)
        finally:
            for watcher in watchers:
                watcher.cancel()
            failed = await asyncio.gather(*watchers, return_exceptions=True)
    for outcome in failed:
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            raise BenchError(f"watching a contender failed: {outcome!r}") from outcome
    return _figures(args, grace, office, contenders, marks)


def _figures(
    args: argparse.Namespace,
    grace: float,
    office: Office,
    contenders: list[Contender],
    marks: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    seconds = sum(marks[w]["seconds"] for w in WINDOWS)
    figures: dict[str, Any] = {}
    for contender in contenders:
        name = contender.name
        staleness: list[float] = []
        never = 0
        never_kinds: dict[str, int] = {}
        for change in office.changes:
            seen = change.seen.get(name)
            if seen is None or seen > marks[change.window]["ended"] + grace:
                never += 1
                never_kinds[change.kind] = never_kinds.get(change.kind, 0) + 1
            else:
                staleness.append((seen - change.sent) * 1000)
        requests = {w: marks[w]["requests"][name] for w in WINDOWS}
        per_hour = {w: requests[w] * 3600 / marks[w]["seconds"] for w in WINDOWS}
        total_per_hour = sum(requests.values()) * 3600 / seconds
        figures[name] = {
            "staleness_p50_ms": round(percentile(staleness, 0.5), 1) if staleness else None,
            "staleness_p99_ms": round(percentile(staleness, 0.99), 1) if staleness else None,
            "staleness_max_ms": round(max(staleness), 1) if staleness else None,
            "shown": len(staleness),
            "never_shown": never,
            "never_shown_kinds": never_kinds,
            "graph_requests": requests,
            "graph_requests_per_hour": round(total_per_hour),
            "graph_requests_per_hour_busy": round(per_hour["busy"]),
            "graph_requests_per_hour_quiet": round(per_hour["quiet"]),
            "graph_requests_per_room_hour": round(total_per_hour / args.rooms, 3),
            "throttled": sum(marks[w]["throttled"][name] for w in WINDOWS),
            "cpu_s": round(sum(marks[w]["cpu_s"][name] for w in WINDOWS), 2),
            "cpu_s_busy": round(marks["busy"]["cpu_s"][name], 2),
            "cpu_s_quiet": round(marks["quiet"]["cpu_s"][name], 2),
            "staleness_ms": sorted(round(s, 1) for s in staleness),
        }
    return {
        "rooms": args.rooms,
        "window_s": args.window_s,
        "poll_interval_s": args.poll_interval_s,
        "grace_s": grace,
        "changes": {w: sum(1 for c in office.changes if c.window == w) for w in WINDOWS},
        "change_kinds": {
            kind: sum(1 for c in office.changes if c.kind == kind)
            for kind in sorted({c.kind for c in office.changes})
        },
        "control_failures": office.failures,
        "changes_skipped": office.skipped,
        "contenders": figures,
    }


@contextlib.contextmanager
def _emulator(root: Path, rooms: int) -> Iterator[dict[str, Any]]:
    seed = root / "seed.json"
    _seed_file(seed, rooms)
    argv = [
        sys.executable, "-m", "graph_emulator.cli", "--seed", str(seed), "--tls",
        "--tls-dir", str(root / "tls"), "--allow-http-notifications", "--port", "0",
    ]  # fmt: skip
    with freshness._child(
        argv, os.environ, log=root / "emulator.log", ready=freshness._emulator_ready
    ) as child:
        yield json.loads(child.banner)


async def _seed_calendars(info: dict[str, Any], office: Office) -> int:
    verify = ssl.create_default_context(cafile=info["cert_path"])
    async with httpx.AsyncClient(
        base_url=info["control_url"], verify=verify, timeout=60
    ) as control:
        return await office.seed(control)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    began = time.monotonic()
    grace = args.grace_s if args.grace_s is not None else 2 * args.poll_interval_s
    office = Office(rooms=args.rooms, seed=args.seed, grace_s=grace, started=time.time())
    with (
        tempfile.TemporaryDirectory(prefix="bookingcache-compare-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        info = stack.enter_context(_emulator(root, args.rooms))
        apps = info["apps"]
        contenders = [Contender(name, apps[name]["client_id"]) for name in (*SERVICES, *POLLERS)]
        try:
            phases: dict[str, float] = {}
            # The calendars are seeded while the services start: nothing subscribes before
            # the rooms are imported.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                seeding = pool.submit(asyncio.run, _seed_calendars(info, office))
                services = [c for c in contenders if c.name in SERVICES]
                _start_services(stack, args, info, root, services)
                seeded = seeding.result()
            phases["seed_and_start_s"] = round(time.monotonic() - began, 1)
            verify = ssl.create_default_context(cafile=info["cert_path"])
            asyncio.run(_first_syncs(services, verify))
            phases["first_sync_s"] = round(time.monotonic() - began - sum(phases.values()), 1)
            for contender in contenders:
                if contender.name in POLLERS:
                    _start_poller(stack, args, info, root, office, contender)
            setup_s = time.monotonic() - began
            result = asyncio.run(_measure(args, info, office, contenders))
        except BenchError:
            for log in sorted(root.glob("**/*.log")):
                sys.stderr.write(f"--- {log.name}\n{log.read_text()[-2000:]}")
            raise
    result["seeded_meetings"] = seeded
    result["setup_s"] = round(setup_s, 1)
    result["setup_phases_s"] = phases
    result["wall_s"] = round(time.monotonic() - began, 1)
    if args.plot is not None:
        from bookingcache.tools.bench.compare_plot import plot

        plot(result, args.plot)
    for figures in result["contenders"].values():
        del figures["staleness_ms"]  # the plot's; too long for the report
    report(result, as_json=args.json)
    return 0
