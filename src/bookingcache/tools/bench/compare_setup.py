"""How ``bookingcache bench compare`` starts its contenders: the emulator with one app
registration per contender, the calendars seeded, each bookingcache service (and connector) with
its own database and app, its rooms imported and read once, and the pollers as processes of
their own. Each contender keeps what it has not shown yet (``Contender.pending``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bookingcache.tools import processes
from bookingcache.tools.bench import freshness
from bookingcache.tools.bench.activity import ORGANIZER, TENANT, mailbox, room_id
from bookingcache.tools.bench.http import BenchError
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


def start_services(
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
        data_dir = root / contender.name
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'bookingcache.db'}"
        env = freshness.service_env(
            info, app=info["apps"][contender.name], debounce_s=args.debounce_s
        )
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
        secret = asyncio.run(
            freshness.create_tenant(options, contender.url, connector_url, info["tenant_id"])
        )
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


async def first_syncs(contenders: list[Contender], verify: ssl.SSLContext) -> None:
    """Every contender's rooms imported, subscribed and read once."""

    async def one(contender: Contender) -> None:
        assert contender.setup is not None
        options, own, database_url = contender.setup
        await _import_rooms(contender.url, options.rooms)
        await freshness.first_sync(options, own, [contender.url], database_url, verify)

    await asyncio.gather(*(one(c) for c in contenders))


def start_poller(
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
        freshness.child(
            argv, env, log=root / f"{contender.name}.log", ready=lambda line: line.startswith(READY)
        )
    )
    contender.pids.append(child.pid)


@contextlib.contextmanager
def emulator(root: Path, rooms: int) -> Iterator[dict[str, Any]]:
    seed = root / "seed.json"
    _seed_file(seed, rooms)
    argv = [
        sys.executable, "-m", "graph_emulator.cli", "--seed", str(seed), "--tls",
        "--tls-dir", str(root / "tls"), "--allow-http-notifications", "--port", "0",
    ]  # fmt: skip
    with freshness.child(
        argv, os.environ, log=root / "emulator.log", ready=freshness.emulator_ready
    ) as child:
        yield json.loads(child.banner)


async def seed_calendars(info: dict[str, Any], office: Office) -> int:
    verify = ssl.create_default_context(cafile=info["cert_path"])
    async with httpx.AsyncClient(
        base_url=info["control_url"], verify=verify, timeout=60
    ) as control:
        return await office.seed(control)
