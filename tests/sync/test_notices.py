"""Wake-ups between processes (PostgreSQL's LISTEN/NOTIFY, ``store.notices``): a worker hears
of another process's intake when it commits, not at its next poll; its own notices it ignores;
a lost listening connection comes back and says so. On SQLite there are none."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from bookingcache.clock import FixedClock
from bookingcache.domain.notifications import InboxItem
from bookingcache.store.sql import notices
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.notices import NoticesCollector
from bookingcache.store.sql.store import SqlStore
from tests.support.databases import asyncpg_dsn
from tests.support.tenants import add_tenant

_APP = "bookingcache notices"


async def _until(check: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not heard in time")
        await asyncio.sleep(0.01)


async def _connected(store: SqlStore) -> None:
    assert store.notices is not None
    await asyncio.wait_for(store.notices.connected.wait(), 10)


async def _follower(
    store: SqlStore, clock: FixedClock, **options: float
) -> tuple[SqlJobQueue, list[dt.datetime | None]]:
    """A queue on ``store`` following other processes, and what its listener heard; returned
    once it listens and has had its first look (something may be due)."""
    follower = SqlJobQueue(store, clock=clock, **options)
    heard: list[dt.datetime | None] = []
    follower.add_listener(heard.append)
    assert follower.follow_other_processes() is True
    await _connected(store)
    await _until(lambda: heard == [None])
    return follower, heard


async def test_on_sqlite_there_are_no_notices(
    store: SqlStore, other_store: SqlStore, clock: FixedClock
) -> None:
    if store.dialect != "sqlite":
        pytest.skip("SQLite's case")
    follower = SqlJobQueue(other_store, clock=clock)
    assert follower.follow_other_processes() is False
    assert other_store.notices is None


async def test_another_process_intake_wakes_the_worker_when_it_commits(
    store: SqlStore,
    other_store: SqlStore,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("notices are PostgreSQL's")
    [room, *_] = await add_tenant(store)
    follower, heard = await _follower(other_store, clock, coalesce_s=0.2)
    writer = SqlJobQueue(store, clock=clock, coalesce_s=0.2)
    inbox = SqlInbox(store, jobs=writer, clock=clock)

    # This process's own commit: its listeners were told in-process; the notice is ignored.
    await inbox.append([InboxItem("contoso", room, change_type="updated")])
    await asyncio.sleep(0.3)
    assert heard == [None]

    # Another process's commit (another origin): heard with the job's due time.
    monkeypatch.setattr(notices._origin, "value", "another-process")
    arrived = clock.now()
    await inbox.append([InboxItem("contoso", room, change_type="updated")], received_at=arrived)
    await _until(lambda: len(heard) == 2)
    assert heard[1] == arrived + dt.timedelta(seconds=0.2)

    # A sweep's enqueue of a calendar without a job is heard too.
    [other, *_] = await add_tenant(store, "fabrikam", rooms=1)
    due = clock.now() + dt.timedelta(seconds=30)
    assert await writer.enqueue({("fabrikam", other): due}) == 1
    await _until(lambda: len(heard) == 3)
    assert heard[2] == due

    # Stopped following: nothing more.
    follower.stop_following()
    await inbox.append([InboxItem("contoso", room, change_type="deleted")])
    await asyncio.sleep(0.3)
    assert len(heard) == 3


async def test_a_lost_listening_connection_comes_back_and_says_so(
    store: SqlStore,
    other_store: SqlStore,
    clock: FixedClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("notices are PostgreSQL's")
    [room, *_] = await add_tenant(store)
    registry = CollectorRegistry()
    registry.register(NoticesCollector(lambda: other_store.notices))

    def sample(name: str) -> float | None:
        return registry.get_sample_value(f"bookingcache_store_notices_{name}")

    _, heard = await _follower(other_store, clock)
    assert (sample("listening"), sample("connections_total")) == (1, 1)

    # The server drops the listening connection (a restart, a failover, an idle cut).
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            _APP,
        )
    finally:
        await admin.close()
    assert ended >= 1
    # Listening again, it says so (what was sent meanwhile was missed: look now).
    await _until(lambda: len(heard) == 2, timeout_s=10)
    assert heard[1] is None
    await _connected(other_store)

    assert sample("connections_total") == 2

    monkeypatch.setattr(notices._origin, "value", "another-process")
    writer = SqlJobQueue(store, clock=clock)
    await SqlInbox(store, jobs=writer, clock=clock).append([InboxItem("contoso", room)])
    await _until(lambda: len(heard) == 3)
    assert sample("received_total") == 1
    assert sample("listening") == 1
