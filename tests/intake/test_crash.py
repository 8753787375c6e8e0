"""Accepted means durable: ``bookingcache serve`` is killed with SIGKILL in the middle of a burst
of notifications (Graph's, Alternative 1, or the connector's signed relay calls, Alternative 2)
and restarted; every notification it answered 202 is in the inbox with its calendar's refresh
still to do, the refreshes get done, and every calendar converges to the source's truth."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bookingcache.clock import SystemClock
from bookingcache.store.sql.schema import inbox_batches, jobs
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import SECRETS_KEY, sealing_box
from tests.support.processes import ServiceProcess
from tests.support.servers import serve_in_thread
from tests.support.signing import sign
from tests.support.waiting import until

from .servers import TruthConnector

ROOMS = 12
CLIENT_STATE = "crash-test-client-state"
KILL_AFTER = 100


def booking(event_id: str, start: dt.datetime, minutes: int = 30) -> dict[str, Any]:
    end = start + dt.timedelta(minutes=minutes)
    return {
        "id": event_id,
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "isAllDay": False,
        "showAs": "busy",
        "isCancelled": False,
        "subject": "Booked",
        "sensitivity": "normal",
        "type": "singleInstance",
        "seriesMasterId": None,
    }


async def cached_ids(store: SqlStore, tenant: str, mailboxes: list[str]) -> dict[str, set[str]]:
    now = dt.datetime.now(dt.UTC)
    found = await store.events_in_window(
        tenant, mailboxes, start=now - dt.timedelta(days=2), end=now + dt.timedelta(days=20)
    )
    return {mailbox: {e.id for e in found.get(mailbox, [])} for mailbox in mailboxes}


async def refreshes_to_do(store: SqlStore) -> set[str]:
    """The calendars with a pending or running refresh."""
    async with store.read() as connection:
        return set((await connection.scalars(sa.select(jobs.c.mailbox))).all())


def graph_call(numbers: list[int]) -> tuple[str, dict[str, str], bytes, dict[str, str]]:
    """Graph posting a batch to the service (Alternative 1): the path, headers and body, and
    the mailbox of each notification by its tag (its resource)."""
    tags: dict[str, str] = {}
    notes = []
    for n in numbers:
        resource = f"Users/room-{n % ROOMS}@crash.example/Events/burst-{n}"
        tags[resource] = f"room-{n % ROOMS}@crash.example"
        notes.append(
            {
                "subscriptionId": f"sub-{n % ROOMS}",
                "clientState": CLIENT_STATE,
                "changeType": "updated",
                "resource": resource,
            }
        )
    body = json.dumps({"value": notes}).encode()
    return "/graph/notifications/crash", {"content-type": "application/json"}, body, tags


def relay_call(
    numbers: list[int], secret: str
) -> tuple[str, dict[str, str], bytes, dict[str, str]]:
    """The connector's signed relay call (Alternative 2), its changes tagged by subscription id."""
    changes = [
        {
            "mailbox": f"room-{n % ROOMS}@crash.example",
            "subscriptionId": f"burst-{n}",
            "changeType": "updated",
        }
        for n in numbers
    ]
    tags = {change["subscriptionId"]: change["mailbox"] for change in changes}
    body = json.dumps({"changes": changes, "lifecycle": [], "resync": []}).encode()
    path = "/v1/tenants/crash/notifications"
    headers = {
        "content-type": "application/json",
        **sign(secret, "POST", path, body, at=dt.datetime.now(dt.UTC)),
    }
    return path, headers, body, tags


def tag_of(entry: dict[str, Any]) -> str:
    """A stored notification's tag: its Graph resource, or a relayed change's subscription id."""
    return str(entry.get("resource") or entry.get("subscriptionId") or "")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("way", "fsync"),
    [("alt1", "false"), ("alt1", "true"), ("alt2", "false")],
    ids=["graph", "graph-fsync", "relay"],
)
async def test_sigkill_mid_burst_loses_no_accepted_notification(
    tmp_path: Path, database_url: str, way: str, fsync: str
) -> None:
    if fsync == "true" and not database_url.startswith("sqlite"):
        pytest.skip("BOOKINGCACHE_FSYNC is SQLite's; PostgreSQL's own settings decide there")
    connector = TruthConnector()
    data_dir = tmp_path / "data"
    env = {
        "BOOKINGCACHE_DATABASE_URL": database_url,
        "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
        # Its connector listens on loopback over http, which only development allows.
        "BOOKINGCACHE_ENVIRONMENT": "development",
        # Refreshes wait out a long coalescing window, so the kill comes before they run and
        # the restarted process has to do them from what it stored.
        "BOOKINGCACHE_SYNC_COALESCE_MS": "4000",
        "BOOKINGCACHE_SYNC_POLL_INTERVAL_MS": "100",
        "BOOKINGCACHE_SYNC_SWEEP_RATE_PER_S": "200",
        "BOOKINGCACHE_SYNC_SWEEP_BOUND_S": "900",
        "BOOKINGCACHE_SYNC_SWEEP_INTERVAL_S": "0.5",
        # A refresh the killed process had claimed is taken over once its lease runs out.
        "BOOKINGCACHE_SYNC_LEASE_S": "3",
        # Flushed to disk before each 202 (and every commit), or left to the kernel.
        "BOOKINGCACHE_FSYNC": fsync,
    }
    service = ServiceProcess(data_dir, env, log=tmp_path / "serve.log")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with serve_in_thread(connector.app()) as connector_url:
        base = await service.start()
        try:
            admin = ADMIN
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                created = await http.post(
                    "/v1/tenants",
                    headers=admin,
                    json={
                        "id": "crash",
                        "name": "Crash Ltd",
                        "event_source": "connector",
                        "connector_url": connector_url,
                        "default_time_zone": "UTC",
                    },
                )
                assert created.status_code == 201, created.text
                connector.secret = created.json()["secrets"]["signing_secret"]
                mailboxes = [f"room-{i}@crash.example" for i in range(ROOMS)]
                for index, mailbox in enumerate(mailboxes):
                    connector.truth[mailbox] = [
                        booking(f"old-{index}", now + dt.timedelta(hours=1))
                    ]
                    linked = await http.put(
                        f"/v1/tenants/crash/rooms/r{index}",
                        headers=admin,
                        json={"mailbox": mailbox, "name": f"Room {index}"},
                    )
                    assert linked.status_code == 201, linked.text

            # The subscriptions the orchestration would have recorded.
            store = await open_store(database_url, box=sealing_box(), migrate=False)
            try:
                registry = SqlSubscriptions(store, clock=SystemClock())
                for index, mailbox in enumerate(mailboxes):
                    await registry.record("crash", mailbox, f"sub-{index}", expires_at=None)
                await registry.rotate_client_state("crash", CLIENT_STATE)

                # The sweep gives every new calendar its first read.
                async def first_reads_done() -> bool:
                    return (await cached_ids(store, "crash", mailboxes)) == {
                        m: {f"old-{i}"} for i, m in enumerate(mailboxes)
                    }

                await until(first_reads_done, timeout_s=20, what="the first reads", every_s=0.1)

                # Every room gets booked; Graph sends its burst of notifications.
                for index, mailbox in enumerate(mailboxes):
                    connector.truth[mailbox] = [
                        booking(f"old-{index}", now + dt.timedelta(hours=1)),
                        booking(f"new-{index}", now + dt.timedelta(hours=2)),
                    ]
                # Each notification's tag, and the calendar it names.
                accepted: dict[str, str] = {}
                sequence = itertools.count()
                killed = asyncio.Event()
                secret = connector.secret
                assert secret is not None

                async def sender(http: httpx.AsyncClient) -> None:
                    while not killed.is_set():
                        numbers = [next(sequence) for _ in range(3)]
                        path, headers, body, tags = (
                            graph_call(numbers) if way == "alt1" else relay_call(numbers, secret)
                        )
                        try:
                            response = await http.post(path, headers=headers, content=body)
                        except httpx.HTTPError:
                            return  # the service is gone
                        if response.status_code == 202:
                            accepted.update(tags)
                            if len(accepted) >= KILL_AFTER * 3 and not killed.is_set():
                                service.kill()
                                killed.set()
                        elif not killed.is_set():
                            raise AssertionError(f"{response.status_code}: {response.text}")

                limits = httpx.Limits(max_connections=16)
                async with httpx.AsyncClient(base_url=base, timeout=5, limits=limits) as http:
                    await asyncio.gather(*(sender(http) for _ in range(16)))
                assert killed.is_set()
                assert await service.wait() == -9

                # Every notification answered 202 is in the inbox: none was lost.
                missing = accepted.keys() - await stored_tags(store)
                assert not missing, f"{len(missing)} accepted notifications were lost"
                before_restart = await cached_ids(store, "crash", mailboxes)
                behind = {m for i, m in enumerate(mailboxes) if f"new-{i}" not in before_restart[m]}
                assert behind
                # A calendar that was notified and not refreshed since still has its refresh
                # to do, stored with the notification.
                notified = set(accepted.values())
                assert behind & notified <= await refreshes_to_do(store)

                reads_before = connector.reads
                await service.start()

                async def converged() -> bool:
                    cached = await cached_ids(store, "crash", mailboxes)
                    if cached != {m: {f"old-{i}", f"new-{i}"} for i, m in enumerate(mailboxes)}:
                        return False
                    return await refreshes_to_do(store) == set()

                await until(converged, timeout_s=45, what="every calendar to converge", every_s=0.1)
                assert accepted.keys() <= await stored_tags(store)
                assert connector.reads > reads_before
                assert connector.refused == 0
            finally:
                await store.close()
        finally:
            await service.stop()


async def stored_tags(store: SqlStore) -> set[str]:
    """The burst's notifications in the inbox, by their tags."""
    async with store.read() as connection:
        return {
            tag_of(entry)
            for row in await connection.execute(sa.select(inbox_batches.c.notifications))
            for entry in row.notifications
            if "burst-" in tag_of(entry)
        }
