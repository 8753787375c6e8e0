"""A rolling upgrade as docs/operations.md ("Upgrades") describes it, on PostgreSQL: two API
processes (``serve --no-worker``) and a worker of the previous build run on its schema; the new
build's ``bookingcache migrate`` moves the schema while they run; then each process is replaced
by the new build's, one at a time, while readers keep reading.

Throughout, every read answers 200 from whichever API process is in the rotation (a process is
taken out before it is stopped, as the proxy's ready check does), the old processes stay ready
on the migrated schema, and after every step a booking made at Graph reaches the availability
answers: intake in an API process, the job in the database, the worker's read of the tenant's
connector, the cached window, the read. Which build runs where changes step by step, so each
combination of old and new is crossed once.

The previous build is ``PREVIOUS`` from this repository's history (``git archive``), run with
this checkout's virtualenv (the dependencies it needs are a subset of today's): the last build
that had both ``bookingcache migrate`` and the readiness rule the upgrade relies on. Move it
forward to the last release when one ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bookingcache.store.sql import engine as engines
from bookingcache.store.sql import pgserver
from bookingcache.tools import processes
from bookingcache.tools.processes import Child, command, serve_command, worker_ready
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import POSTGRES_ENV, SECRETS_KEY
from tests.support.emulated import emulated_graph, serve_connector
from tests.support.servers import bound_socket, loopback_url
from tests.support.signing import sign
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PREVIOUS = "5c8eaed95cb32606a1b2e47213ecd6a6775400c5"
REPOSITORY = Path(__file__).resolve().parents[2]
TENANT = "upgrade"
ROOMS = 4


def _previous_build(into: Path) -> Path:
    """The previous build's ``src`` folder, unpacked from the repository's history."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPOSITORY), "archive", "--format=tar", PREVIOUS, "src"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.fail(
            f"the previous build {PREVIOUS[:12]} must come from this clone's git history "
            f"(a full clone, not a shallow one or an export): {error}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


@pytest.fixture
def database_url() -> Iterator[str]:
    server = os.environ[POSTGRES_ENV]
    name = f"bookingcache_upgrade_{uuid.uuid4().hex[:8]}"
    created = asyncio.run(pgserver.create_database(server, name))
    try:
        yield created
    finally:
        asyncio.run(pgserver.drop_database(server, name))


@dataclass
class Builds:
    """How to run each build's commands: the environment (``PYTHONPATH`` picks the build)."""

    tmp: Path
    database_url: str
    previous_src: Path
    base: dict[str, str] = field(default_factory=dict)

    def env(self, build: str) -> dict[str, str]:
        env = dict(self.base)
        if build == "previous":
            env["PYTHONPATH"] = str(self.previous_src)
        return env

    def run(self, build: str, *args: str) -> str:
        done = subprocess.run(
            command(*args), env=self.env(build), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def api(self, build: str, n: int) -> Child:
        data = self.tmp / f"api-{n}-{build}"
        argv = serve_command(data, "--no-worker", "--database-url", self.database_url)
        child = processes.start(
            argv, env=self.env(build), name=f"api {n} ({build})", log=self.tmp / f"api-{n}.log"
        )
        child.listening(timeout_s=60)
        return child

    def worker(self, build: str) -> Child:
        data = self.tmp / f"worker-{build}"
        argv = command("worker", "--data-dir", str(data), "--database-url", self.database_url)
        child = processes.start(
            argv, env=self.env(build), name=f"worker ({build})", log=self.tmp / "worker.log"
        )
        child.ready(worker_ready, timeout_s=60)
        return child


class Rotation:
    """The API processes readers may use, as a proxy's ready check keeps them; a process is
    taken out (and its requests in flight finished) before it is stopped."""

    def __init__(self, read_token: str) -> None:
        self._lock = threading.Lock()
        self._urls: list[str] = []
        self._turn = 0
        self._headers = {"Authorization": f"Bearer {read_token}"}
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name="readers")

    def add(self, url: str) -> None:
        with self._lock:
            self._urls.append(url)

    def remove(self, url: str) -> None:
        with self._lock:
            self._urls.remove(url)

    def _read(self) -> None:
        with httpx.Client(timeout=10, headers=self._headers) as client:
            while not self._stop.is_set():
                with self._lock:
                    if self._urls:
                        self._turn += 1
                        url = self._urls[self._turn % len(self._urls)]
                        room = f"room-{self._turn % ROOMS}"
                        target = f"{url}/v1/tenants/{TENANT}/rooms/{room}/availability"
                        try:
                            status = client.get(target).status_code
                        except httpx.HTTPError as error:
                            self.failures.append(f"{url}: {type(error).__name__}")
                        else:
                            self.reads += 1
                            if status != 200:
                                self.failures.append(f"{url}: {status}")
                time.sleep(0.02)

    def __enter__(self) -> Rotation:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _head(database_url: str) -> str:
    async def read() -> str:
        engine = engines.create_engine(database_url)
        try:
            async with engine.connect() as connection:
                found = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                return str(found.scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_a_rolling_upgrade_keeps_answering_and_keeps_syncing(
    tmp_path: Path, database_url: str
) -> None:
    previous_src = _previous_build(tmp_path / "previous")
    base = {k: v for k, v in os.environ.items() if not k.startswith("BOOKINGCACHE_")}
    base.update(
        {
            "BOOKINGCACHE_ENVIRONMENT": "development",
            "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
            "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
            "BOOKINGCACHE_LOG_LEVEL": "WARNING",
            # Notifications come from the test's signed relay calls, not from subscriptions.
            "BOOKINGCACHE_ORCHESTRATION_ENABLED": "false",
            "BOOKINGCACHE_SYNC_POLL_INTERVAL_MS": "100",
        }
    )
    builds = Builds(tmp_path, database_url, previous_src, base)
    # The previous build really is the one its processes run.
    probe = subprocess.run(
        [sys.executable, "-c", "import bookingcache; print(bookingcache.__file__)"],
        env=builds.env("previous"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().startswith(str(previous_src)), probe.stdout

    with contextlib.ExitStack() as stack:
        graph = stack.enter_context(emulated_graph(tmp_path))
        control = graph.control
        mailboxes = sorted(m.upn for m in graph.state.directory.rooms())[:ROOMS]
        connector_sock = bound_socket()
        stack.callback(connector_sock.close)
        connector_url = loopback_url(connector_sock)

        # --- the previous build, on its own schema ------------------------------------------
        builds.run("previous", "migrate", "--database-url", database_url)
        apis = {n: builds.api("previous", n) for n in (1, 2)}
        worker = builds.worker("previous")
        stack.callback(lambda: [c.stop() for c in (*apis.values(), worker)])
        urls = {n: child.banner_url for n, child in apis.items()}
        admin = stack.enter_context(httpx.Client(headers=ADMIN, timeout=30))
        created = admin.post(
            f"{urls[1]}/v1/tenants",
            json={
                "id": TENANT,
                "name": "Upgrade",
                "event_source": "connector",
                "connector_url": connector_url,
            },
        )
        assert created.status_code == 201, created.text
        secrets = created.json()["secrets"]
        for n, mailbox in enumerate(mailboxes):
            linked = admin.put(
                f"{urls[2]}/v1/tenants/{TENANT}/rooms/room-{n}",
                json={"mailbox": mailbox, "name": f"Room {n}"},
            )
            assert linked.status_code in (200, 201), linked.text
        stack.enter_context(
            serve_connector(
                graph.emulator,
                graph.apps["full"],
                connector_sock,
                webhook_secret=secrets["signing_secret"],
                service_url=urls[1],
                service_tenant=TENANT,
                state_dir=tmp_path / "connector",
            )
        )
        reader = httpx.Client(
            headers={"Authorization": f"Bearer {secrets['read_token']}"}, timeout=30
        )
        stack.enter_context(reader)
        booked: list[tuple[int, str]] = []

        def booking_reaches_the_map(via: str) -> None:
            """A meeting booked now at Graph, announced through ``via``'s relay intake, is read
            by the worker and shows through every API process."""
            n = len(booked) % ROOMS
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            start = now + dt.timedelta(hours=2 + len(booked))
            subject = f"Upgrade step {len(booked)}"
            answer = control.post(
                f"/mailboxes/{mailboxes[n]}/bookings",
                json={
                    "organizer": "kari.nordmann@contoso.example",
                    "start": _z(start),
                    "end": _z(start + dt.timedelta(minutes=30)),
                    "subject": subject,
                },
            )
            assert answer.status_code in (200, 201), answer.text
            booked.append((n, subject))
            path = f"/v1/tenants/{TENANT}/notifications"
            body = json.dumps({"changes": [], "lifecycle": [], "resync": [mailboxes[n]]}).encode()
            headers = sign(secrets["signing_secret"], "POST", path, body, at=now)
            sent = httpx.post(
                f"{via}{path}",
                content=body,
                headers={**headers, "content-type": "application/json"},
                timeout=30,
            )
            assert sent.status_code == 202, sent.text

            def shown_everywhere() -> bool:
                for url in urls.values():
                    events = reader.get(
                        f"{url}/v1/tenants/{TENANT}/rooms/room-{n}/events",
                        params={
                            "start": _z(start - dt.timedelta(minutes=5)),
                            "end": _z(start + dt.timedelta(minutes=35)),
                        },
                    )
                    assert events.status_code == 200, events.text
                    # Exchange puts the organiser's name in a room's copy of the subject.
                    if not any(e["start"] == _z(start) for e in events.json()["events"]):
                        return False
                return True

            wait_for(shown_everywhere, timeout_s=60, what=f"booking {len(booked)} in the map")

        def ready(url: str) -> None:
            answer = httpx.get(f"{url}/readyz", timeout=10)
            assert answer.status_code == 200, answer.text

        with Rotation(secrets["read_token"]) as rotation:
            for url in urls.values():
                rotation.add(url)
            booking_reaches_the_map(urls[1])

            # --- the new build's migrations, under the running previous build -----------------
            builds.run("new", "migrate", "--database-url", database_url)
            new_head = _head(database_url)
            for url in urls.values():
                ready(url)
            booking_reaches_the_map(urls[2])

            # --- one process at a time -----------------------------------------------------
            for n in (1, 2):
                rotation.remove(urls[n])
                assert apis[n].stop() == 0
                apis[n] = builds.api("new", n)
                urls[n] = apis[n].banner_url
                ready(urls[n])
                rotation.add(urls[n])
                booking_reaches_the_map(urls[n])
            assert worker.stop() == 0
            worker = builds.worker("new")
            booking_reaches_the_map(urls[1])
            booking_reaches_the_map(urls[2])
            time.sleep(0.5)

        for url in urls.values():
            ready(url)
        assert _head(database_url) == new_head
        # The readers were answered all along, by both builds.
        assert rotation.failures == [], rotation.failures[:10]
        assert rotation.reads > 50, rotation.reads
        assert len(booked) == 6
