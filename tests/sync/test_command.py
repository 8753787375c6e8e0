"""``bookingcache worker`` as a real process: starts, is woken by another process's intake on
PostgreSQL, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bookingcache.clock import FixedClock, SystemClock
from bookingcache.domain.tenancy import EventSource
from bookingcache.store.schema import jobs
from bookingcache.store.sql import open_store
from bookingcache.sync.model import InboxItem
from bookingcache.sync.queue import JobQueue

from .conftest import TENANT, add_tenant


@contextlib.contextmanager
def _worker(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``bookingcache worker`` on ``data_dir`` (and ``args``), once it says it runs; killed
    afterwards if it is still running."""
    env = {**os.environ, "BOOKINGCACHE_LOG_LEVEL": "WARNING", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "bookingcache.cli", "worker", "--data-dir", str(data_dir), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("bookingcache worker ") and line.rstrip().endswith(" running")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.slow
def test_worker_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    with _worker(tmp_path) as process:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
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
    store = await open_store(database_url, migrate=False, clock=clock)
    try:
        [room, *_] = await add_tenant(store, source=EventSource.PUSH, connector_url=None)

        async def pending() -> list[str]:
            async with store.read() as connection:
                return list((await connection.execute(sa.select(jobs.c.mailbox))).scalars())

        with _worker(
            tmp_path,
            "--database-url",
            database_url,
            env={"BOOKINGCACHE_SYNC_POLL_INTERVAL_MS": "60000"},
        ) as process:
            # Listening, and past its first look at the queue.
            await asyncio.sleep(2)
            await JobQueue(store, clock=SystemClock(), coalesce_s=0.025).append_inbox(
                [InboxItem(TENANT, room, change_type="updated")]
            )
            assert await pending() == [room]
            started = time.monotonic()
            while await pending():
                assert time.monotonic() - started < 5, "the worker was not woken"
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    finally:
        await store.close()
