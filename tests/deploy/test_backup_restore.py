"""Backup and restore as docs/operations.md describes it: ``pg_dump`` of a running service's
database, restored with ``pg_restore`` into a fresh database, and the service started on it
resumes where the dump left off: every room answers from the restored cache at once, and no
calendar is read again (no resync storm: the Graph emulator counts every request per mailbox),
while a booking made afterwards still reaches the map through Graph's notification.

The deployment is the one of the orchestration tests, on PostgreSQL: the Graph emulator, the
real connector and the service, each on a loopback port that stays the same across the
restore (the subscriptions at Graph name the service's URL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache.store.sql import pgserver
from graph_emulator.state import EmulatorState
from tests.orchestration.world import FAST, FAST_SYNC, TENANT, World, deployment
from tests.support.databases import POSTGRES_ENV, asyncpg_dsn
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOMS = 6


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (PostgreSQL's client tools)")
    return found


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two fresh databases: the running service's, and the one its dump is restored into."""
    server = os.environ[POSTGRES_ENV]
    names = [f"bookingcache_backup_{uuid.uuid4().hex[:8]}_{n}" for n in ("live", "restored")]
    urls = [asyncio.run(pgserver.create_database(server, name)) for name in names]
    try:
        yield urls[0], urls[1]
    finally:
        for name in names:
            asyncio.run(pgserver.drop_database(server, name))


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _read_since(state: EmulatorState, reads_before: dict[str, int]) -> dict[str, int]:
    """How many more requests the emulator counted for each mailbox since ``reads_before``."""
    return {
        mailbox: count - reads_before.get(mailbox, 0)
        for mailbox, count in state.counters.requests_per_mailbox.items()
        if count != reads_before.get(mailbox, 0)
    }


def _settled(world: World, rooms: list[dict[str, Any]]) -> None:
    """Every room subscribed at Graph, recorded by the service and read once."""

    def done() -> bool:
        health = world.health()
        return len(health) == len(rooms) and all(
            row["subscription_id"] and row["last_success_at"] for row in health.values()
        )

    wait_for(done, timeout_s=60, what="every room subscribed and read")


def test_a_restored_dump_resumes_without_a_resync_storm(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    live, restored = databases
    pg_dump, pg_restore = _tool("pg_dump"), _tool("pg_restore")
    with deployment(
        tmp_path,
        orchestration=FAST,
        sync=FAST_SYNC,
        database_url=live,
        database_wait_s=0,
    ) as world:
        state, admin, control = world.emulator.state, world.admin, world.control
        rooms = world.rooms[:ROOMS]

        # --- the live service, dumped while it runs -----------------------------------------
        for room in rooms:
            world.link(room["id"], room["upn"])
        reader = world.stack.enter_context(
            httpx.Client(
                base_url=world.service_url,
                headers={"Authorization": f"Bearer {world.read_token}"},
                timeout=30,
            )
        )
        _settled(world, rooms)
        now = dt.datetime.now(dt.UTC)
        window = {"start": _z(now), "end": _z(now + dt.timedelta(days=7))}

        def availability() -> dict[str, Any]:
            answers = {}
            for room in rooms:
                answer = reader.get(
                    f"/v1/tenants/{TENANT}/rooms/{room['id']}/availability", params=window
                )
                assert answer.status_code == 200, answer.text
                answers[room["id"]] = answer.json()["busy"]
            return answers

        before = availability()
        assert any(before.values()), "the seeded calendars have meetings this week"
        dump = tmp_path / "bookingcache.dump"
        subprocess.run(
            [pg_dump, "--format=custom", f"--file={dump}", f"--dbname={asyncpg_dsn(live)}"],
            check=True,
            timeout=60,
        )
        world.stop_service()

        # --- restored into a fresh database, and a new service on it ------------------------
        subprocess.run(
            [pg_restore, "--no-owner", f"--dbname={asyncpg_dsn(restored)}", str(dump)],
            check=True,
            timeout=60,
        )
        reads_before = dict(state.counters.requests_per_mailbox)
        # The emulator counted the first reads of every room: it would count a second.
        assert {room["id"] for room in rooms} <= set(reads_before)
        world.start_service(database_url=restored)
        # The cache answers at once, as it was.
        assert availability() == before
        # The restarted orchestration converges the tenant (it does at every start) and the
        # worker and its sweep run: let them, then count what was read meanwhile.
        wait_for(
            lambda: admin.post(f"/v1/tenants/{TENANT}/subscriptions:converge").status_code == 200,
            what="a converge through the connector",
        )
        health = world.health()
        assert all(row["state"] == "healthy" for row in health.values()), health
        quiet_until = time.monotonic() + 3.0
        while time.monotonic() < quiet_until:
            time.sleep(0.2)
        assert _read_since(state, reads_before) == {}, "calendars read again after the restore"

        # And it resumes: a booking made now reaches the map through its notification.
        room = rooms[0]
        organizer = next(m for m in state.directory.all() if not m.is_room)
        start = (now + dt.timedelta(days=8)).replace(hour=2, minute=0, second=0, microsecond=0)
        booked = control.post(
            f"/mailboxes/{room['upn']}/bookings",
            json={
                "organizer": organizer.upn,
                "subject": "After the restore",
                "start": _z(start),
                "end": _z(start + dt.timedelta(hours=1)),
            },
        )
        assert booked.status_code == 201, booked.text

        def shows_booking() -> bool:
            answer = reader.get(
                f"/v1/tenants/{TENANT}/rooms/{room['id']}/availability",
                params={"start": _z(start), "end": _z(start + dt.timedelta(hours=1))},
            )
            return answer.status_code == 200 and bool(answer.json()["busy"])

        wait_for(shows_booking, what="the new booking in the restored service's answers")
        read_since = _read_since(state, reads_before)
        assert set(read_since) == {room["id"]}  # that calendar, and no other
        assert 1 <= read_since[room["id"]] <= 3
