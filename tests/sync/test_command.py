"""``bookingcache worker`` as a real process: starts, is woken by another process's intake on
PostgreSQL, stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bookingcache.clock import FixedClock, SystemClock
from bookingcache.domain.notifications import InboxItem
from bookingcache.domain.tenancy import EventSource
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.schema import jobs
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.tools import processes
from bookingcache.tools.processes import command, worker_ready
from tests.support.databases import SECRETS_KEY, sealing_box
from tests.support.tenants import TENANT, add_tenant
from tests.support.waiting import until


@contextlib.contextmanager
def _worker(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[processes.Child]:
    """``bookingcache worker`` on ``data_dir`` (and ``args``), once it says it runs; stopped
    afterwards if it is still running."""
    env = {
        **os.environ,
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        **(env or {}),
    }
    argv = command("worker", "--data-dir", str(data_dir), *args)
    with processes.running(argv, env=env, ready=worker_ready, timeout_s=60) as child:
        yield child


@pytest.mark.slow
def test_worker_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    with _worker(tmp_path) as worker:
        assert worker.stop() == 0
    # The worker migrated the embedded database it was pointed at.
    assert (tmp_path / "bookingcache.db").exists()


@pytest.mark.slow
async def test_on_postgresql_the_worker_takes_another_process_intake_at_once(
    tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    """A worker process that would look for work only once a minute refreshes a calendar
    within moments of another process's intake committing: the notice wakes it."""
    if not database_url.startswith("postgresql"):
        pytest.skip("notices are PostgreSQL's")
    store = await open_store(database_url, box=sealing_box(), migrate=False, clock=clock)
    try:
        [first, room, *_] = await add_tenant(store, source=EventSource.PUSH, connector_url=None)

        async def pending() -> list[str]:
            async with store.read() as connection:
                return list((await connection.execute(sa.select(jobs.c.mailbox))).scalars())

        with _worker(
            tmp_path,
            "--database-url",
            database_url,
            env={"BOOKINGCACHE_SYNC_POLL_INTERVAL_MS": "60000"},
        ) as worker:
            writer = SqlJobQueue(store, clock=SystemClock(), coalesce_s=0.025)
            inbox = SqlInbox(store, jobs=writer, clock=SystemClock())
            # A first calendar, refreshed at the worker's first look; then it sleeps a minute,
            # listening for other processes' notices.
            await inbox.append([InboxItem(TENANT, first, change_type="updated")])
            await until(lambda: _no_jobs(store), timeout_s=30, what="the first refresh")
            await until(lambda: _listening(store), timeout_s=30, what="the worker listens")
            await inbox.append([InboxItem(TENANT, room, change_type="updated")])
            assert await pending() == [room]
            # Far sooner than its minute-long sleep: the notice woke it.
            await until(lambda: _no_jobs(store), timeout_s=30, what="the worker was woken")
            assert worker.stop() == 0
    finally:
        await store.close()


async def _no_jobs(store: SqlStore) -> bool:
    async with store.read() as connection:
        return not (await connection.execute(sa.select(jobs.c.id))).first()


async def _listening(store: SqlStore) -> bool:
    """Whether a process listens for notices on the store's database (PostgreSQL)."""
    async with store.read() as connection:
        found = await connection.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'bookingcache notices'"
            )
        )
    return bool(found)
