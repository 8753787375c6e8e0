"""A benchmark stopped part-way (``kill``, a CI job's time limit, Ctrl-C) leaves nothing behind:
the processes it started are stopped, the database it made on the caller's PostgreSQL server is
dropped, and its temporary directory is removed. ``bench soak`` is the one that starts the most:
a Graph emulator, two API processes and two workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import POSTGRES_ENV, asyncpg_dsn
from tests.support.processes import alive

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The emulator, two API processes and two workers.
CLUSTER = 5
STARTED_WITHIN_S = 120.0
STOPPED_WITHIN_S = 60.0


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return {int(child) for child in path.read_text().split()}
    except FileNotFoundError:
        return set()


def _soak_databases() -> set[str]:
    async def names() -> set[str]:
        connection = await asyncpg.connect(asyncpg_dsn(os.environ[POSTGRES_ENV]), timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'bookingcache_bench_soak_%'"
            )
        finally:
            await connection.close()
        return {row["datname"] for row in rows}

    return asyncio.run(names())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_a_stopped_soak_leaves_nothing_behind(stop_signal: int, tmp_path: Path) -> None:
    before = _soak_databases()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "bookingcache.cli", "bench", "soak",
            "--database-url", os.environ[POSTGRES_ENV],
            "--rooms", "12", "--rate", "8", "--warmup", "60", "--duration", "60",
            "--interval", "2", "--per-room", "2", "--json",
        ],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTED_WITHIN_S
        while len(_children(process.pid)) < CLUSTER or not _soak_databases() - before:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the soak's cluster did not start"
            time.sleep(0.2)
        started = _children(process.pid)
        made = _soak_databases() - before
        assert list(tmp_path.glob("bookingcache-soak-*"))
        # Only the benchmark is signalled, as `kill <pid>` does: its children are its to stop.
        process.send_signal(stop_signal)
        _out, err = process.communicate(timeout=STOPPED_WITHIN_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + stop_signal, err
    assert f"stopped ({signal.Signals(stop_signal).name})" in err
    assert not [pid for pid in started if alive(pid)], err
    assert not made & _soak_databases()
    assert not list(tmp_path.glob("bookingcache-soak-*"))
