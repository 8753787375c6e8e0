"""``bookingcache bench freshness``: how long a change in Microsoft 365 takes to show in the
availability API and on the change stream, end to end through real processes.

A Graph emulator (``graph-emulator``, TLS) holds the room mailboxes and delivers change
notifications to the service's Alternative 1 intake over loopback HTTP; the service
(``bookingcache serve``, its worker reading Graph over MSAL and calendarView delta) refreshes the
cache. With ``--alternative 2`` the emulator notifies the customer's connector (its ASGI app
under uvicorn, a process of its own), whose relay calls the service; with ``--source connector``
the worker reads the calendars through the connector, with ``--source push`` the relay's calls
carry them. The connector then creates the subscriptions, as the service's orchestration asks.

The benchmark books, moves and cancels meetings through the emulator's control API at a
fixed rate and polls the bulk availability API for the rooms with changes still unseen, while
one change-stream client per floor (``?building=HQ&floor=N``, 100 rooms a floor) follows the
stream. A change's latency runs from just before its control call to the first availability
answer that shows it (``p50_ms``...), and to the first stream event of its room that shows it
(``stream_p50_ms``, ``stream_p99_ms``); a change never seen within the settle time counts as
lost (``lost``, ``stream_lost``). Graph requests per change
come from the emulator's per-mailbox request counters.

The module runs just over 500 lines: besides its own benchmark it holds the pieces the cluster
benchmarks (``soak``, ``scale``) start theirs with: the emulator, the service's processes, the
tenant and its rooms, the first sync.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bookingcache.clock import SystemClock
from bookingcache.settings import new_secrets_key
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from bookingcache.tools import processes
from bookingcache.tools.bench.activity import (
    ADMIN_TOKEN,
    ORGANIZER,
    TENANT,
    floor_of,
    mailbox,
    measure,
    room_id,
)
from bookingcache.tools.bench.http import BenchError, report
from bookingcache.tools.processes import (
    NotAnswering,
    command,
    free_port,
    serve_command,
    wait_answering,
    worker_ready,
)

# The key that seals the bench database's secrets, given to the service it starts too.
SECRETS_KEY = new_secrets_key()


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
    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="no change-stream clients (the availability API's figures without them)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def _uses_connector(args: argparse.Namespace) -> bool:
    return bool(args.alternative == 2 or args.source != "graph")


# --- processes -------------------------------------------------------------------------------


def emulator_ready(line: str) -> bool:
    """The emulator's first line: its addresses and apps as JSON."""
    return line.startswith("{")


def emulator_command(root: Path, seed: Path, *extra: str) -> list[str]:
    """The Graph emulator with the mailboxes of ``seed``, over TLS (its certificate in
    ``root``), on a free port; ``extra`` adds options (``--latency-ms``)."""
    return [
        sys.executable, "-m", "graph_emulator.cli", "--seed", str(seed), "--tls",
        "--tls-dir", str(root / "tls"), "--allow-http-notifications", "--port", "0", *extra,
    ]  # fmt: skip


def seed_file(path: Path, rooms: int) -> None:
    mailboxes: list[dict[str, Any]] = [
        {
            "upn": mailbox(index),
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


def graph_env(info: Mapping[str, Any], app: Mapping[str, str] | None = None) -> dict[str, str]:
    """The service's settings that make the emulator (``info``, its banner) Microsoft Graph:
    its authority, base URL and CA bundle, and ``app`` (the emulator's ``full`` app unless
    given) as the service's own app registration."""
    app = info["apps"]["full"] if app is None else app
    return {
        "BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID": app["client_id"],
        "BOOKINGCACHE_SYNC_GRAPH__CLIENT_SECRET": app["client_secret"],
        "BOOKINGCACHE_SYNC_GRAPH__AUTHORITY_HOST": info["authority"].rsplit("/", 1)[0],
        "BOOKINGCACHE_SYNC_GRAPH__GRAPH_BASE_URL": info["base_url"],
        "BOOKINGCACHE_SYNC_GRAPH__CA_BUNDLE": info["cert_path"],
    }


def service_env(
    info: Mapping[str, Any], *, app: Mapping[str, str] | None = None, debounce_s: float = 0.5
) -> dict[str, str]:
    """The environment of the service's processes: the benchmark's admin token and secrets
    key, and the emulator as Microsoft Graph (``graph_env``)."""
    return {
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
        **os.environ,
        # Everything runs on loopback over http: the emulator, the connector, the
        # service's own URL, which only development allows (docs/api.md).
        "BOOKINGCACHE_ENVIRONMENT": "development",
        "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        **graph_env(info, app),
        "BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S": str(debounce_s),
    }


def _admin(service_url: str) -> httpx.AsyncClient:
    """A client of the service's admin API, for the set-up."""
    return httpx.AsyncClient(
        base_url=service_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    )


async def create_tenant(
    args: argparse.Namespace, service_url: str, connector_url: str | None, directory: str
) -> str:
    """The tenant, without rooms yet (so nothing asks the connector for subscriptions before
    it runs), with its way in and, for the graph source, the emulator's directory (read with
    the service's shared app); returns the tenant's signing secret, which the connector
    needs."""
    body: dict[str, Any] = {
        "id": TENANT,
        "name": "Bench",
        "event_source": args.source,
        "connector_url": connector_url,
        "default_time_zone": "Europe/Berlin",
        "notification_mode": "relay" if args.alternative == 2 else "direct",
    }
    if args.source == "graph":
        body["graph"] = {"directory_tenant": directory}
    async with _admin(service_url) as service:
        created = await service.post("/v1/tenants", json=body)
        if created.status_code != 201:
            raise BenchError(f"creating the tenant failed: {created.text[:300]}")
        secret: str = created.json()["secrets"]["signing_secret"]
        return secret


async def import_rooms(args: argparse.Namespace, service_url: str) -> None:
    async with _admin(service_url) as service:
        rooms = [
            {
                "room_id": room_id(i),
                "mailbox": mailbox(i),
                "name": f"Room {i:04d}",
                "building": "HQ",
                "floor": floor_of(i),
            }
            for i in range(args.rooms)
        ]
        imported = await service.post(f"/v1/tenants/{TENANT}/rooms:import", json={"rooms": rooms})
        if imported.status_code != 200:
            raise BenchError(f"importing rooms failed: {imported.text[:300]}")


async def first_sync(
    args: argparse.Namespace,
    info: dict[str, Any],
    service_urls: Sequence[str],
    database_url: str,
    verify: ssl.SSLContext,
) -> None:
    """Every room subscribed and its calendar read once. Without the connector the benchmark
    subscribes each room at Graph itself, the rooms' notifications going to the service
    processes of ``service_urls`` in turn; with it, the service's orchestration has the
    connector do it (and, for ``push``, the connector's reconciliation pushes each window)."""
    store = await open_store(database_url, box=SecretBox([SECRETS_KEY]), migrate=False)
    try:
        if _uses_connector(args):
            await _wait(
                lambda: _all_subscribed(service_urls[0], args.rooms),
                "the connector's subscriptions",
            )
        else:
            registry = SqlSubscriptions(store, clock=SystemClock())
            client_state = secrets.token_urlsafe(24)
            await registry.rotate_client_state(TENANT, client_state)
            await subscribe_rooms(
                info,
                [mailbox(i) for i in range(args.rooms)],
                service_urls=service_urls,
                client_state=client_state,
                registry=registry,
                verify=verify,
            )
        # Push windows come from the connector's reconciliation, whenever it runs.
        subscribed = dt.datetime.now(dt.UTC) if args.source != "push" else _NEVER
        if args.source != "push":
            # Each calendar read from now on, once its subscription exists: a read the sweep
            # queued for later is pulled in.
            queue = SqlJobQueue(store, clock=SystemClock())
            await queue.request_refresh(
                [(TENANT, mailbox(i)) for i in range(args.rooms)], due=subscribed
            )

        async def read() -> bool:
            calendars = await store.list_calendars(TENANT)
            return all(
                c.last_success_at is not None and c.last_success_at >= subscribed for c in calendars
            )

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


async def subscribe_rooms(
    info: Mapping[str, Any],
    mailboxes: Sequence[str],
    *,
    tenant: str = TENANT,
    service_urls: Sequence[str],
    client_state: str,
    registry: SqlSubscriptions,
    verify: ssl.SSLContext,
    apps: Sequence[Mapping[str, str]] = (),
    expires_in: dt.timedelta = dt.timedelta(days=3),
) -> None:
    """The calendars ``mailboxes`` subscribed at Graph (the emulator, ``info``) as the
    customer's administrator does it, and recorded in ``registry`` for ``tenant``. The
    ``i``-th notifies ``service_urls[i % n]`` and is subscribed by ``apps[i % n]`` (the
    emulator's ``full`` app unless given: each app may write 500 subscriptions per 20 s); 16
    at a time, waiting out a 429's ``Retry-After``."""
    async with httpx.AsyncClient(verify=verify, timeout=60) as graph:

        async def token(app: Mapping[str, str]) -> str:
            answer = await graph.post(
                f"{info['authority']}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": app["client_id"],
                    "client_secret": app["client_secret"],
                    "scope": "https://graph.microsoft.com/.default",
                },
            )
            if answer.status_code != 200:
                raise BenchError(f"no token for the subscriptions: {answer.text[:300]}")
            return str(answer.json()["access_token"])

        tokens = [await token(app) for app in (apps or [info["apps"]["full"]])]
        expires = (dt.datetime.now(dt.UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")

        async def one(index: int) -> None:
            service_url = service_urls[index % len(service_urls)]
            while True:
                response = await graph.post(
                    f"{info['base_url']}/subscriptions",
                    headers={"Authorization": f"Bearer {tokens[index % len(tokens)]}"},
                    json={
                        "changeType": "created,updated,deleted",
                        "notificationUrl": f"{service_url}/graph/notifications/{tenant}",
                        "lifecycleNotificationUrl": f"{service_url}/graph/lifecycle/{tenant}",
                        "resource": f"users/{mailboxes[index]}/events",
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
                    tenant,
                    mailboxes[index],
                    body["id"],
                    expires_at=dt.datetime.fromisoformat(
                        body["expirationDateTime"].replace("Z", "+00:00")
                    ),
                )
                return

        todo = list(range(len(mailboxes)))
        while todo:
            batch, todo = todo[:16], todo[16:]
            await asyncio.gather(*(one(index) for index in batch))


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
    # The connector's own hardened server (bounded requests, read timeouts), as customers run it.
    return [
        sys.executable, "-m", "bookingcache_connector", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip


def start_connector(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    info: dict[str, Any],
    root: Path,
    service_url: str,
    secret: str,
    port: int,
) -> None:
    """The customer's connector on ``port``, answering, stopped when ``stack`` closes."""
    connector = processes.start(
        _connector_command(port),
        env=_connector_env(args, info, root, service_url, secret),
        log=root / "connector.log",
    )
    stack.callback(connector.stop)
    try:
        wait_answering(connector.process, f"http://127.0.0.1:{port}/healthz", timeout_s=30)
    except NotAnswering as exc:
        raise BenchError(f"the connector {exc}") from exc


@contextmanager
def child(
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
        seed_file(seed, args.rooms)
        with child(
            emulator_command(root, seed),
            os.environ,
            log=root / "emulator.log",
            ready=emulator_ready,
        ) as emulator:
            info: dict[str, Any] = json.loads(emulator.banner)
            data_dir = root / "service"
            database_url = args.database_url or f"sqlite:///{data_dir / 'bookingcache.db'}"
            env = service_env(info)
            connector_port = free_port() if _uses_connector(args) else None
            connector_url = f"http://127.0.0.1:{connector_port}" if connector_port else None
            service_command = serve_command(data_dir, "--database-url", database_url)
            worker_command = command(
                "worker", "--data-dir", str(data_dir), "--database-url", database_url
            )
            if args.split:
                service_command.append("--no-worker")
            with contextlib.ExitStack() as stack:
                service = stack.enter_context(child(service_command, env, log=root / "service.log"))
                if args.split:  # started once the service has migrated the database
                    stack.enter_context(
                        child(worker_command, env, log=root / "worker.log", ready=worker_ready)
                    )
                service_url = service.banner_url
                verify = ssl.create_default_context(cafile=info["cert_path"])
                try:
                    secret = asyncio.run(
                        create_tenant(args, service_url, connector_url, info["tenant_id"])
                    )
                    if connector_port is not None:
                        start_connector(
                            stack, args, info, root, service_url, secret, connector_port
                        )
                    asyncio.run(import_rooms(args, service_url))
                    asyncio.run(first_sync(args, info, [service_url], database_url, verify))
                    result = asyncio.run(measure(args, info, service_url, verify))
                    if os.environ.get("BOOKINGCACHE_BENCH_KEEP_LOG"):
                        Path(os.environ["BOOKINGCACHE_BENCH_KEEP_LOG"]).write_text(
                            (root / "service.log").read_text()
                        )
                except BenchError:
                    for name in ("service", "connector"):
                        if (root / f"{name}.log").exists():
                            sys.stderr.write((root / f"{name}.log").read_text()[-3000:])
                    raise
    report(result, as_json=args.json)
    return 0
