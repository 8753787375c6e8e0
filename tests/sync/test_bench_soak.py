"""``bookingcache bench soak`` runs end to end with tiny numbers: two API processes and two
workers on a PostgreSQL database of their own, a steady amount of cached data, and a sample
of every process's memory and the queue at each interval."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path

import asyncpg
import pytest

from bookingcache.store.sql.engine import autovacuum_on, create_database, drop_database, vacuum
from bookingcache.tools.bench import main
from bookingcache.tools.bench.vacuum import VACUUM_EVERY_S
from tests.support.databases import POSTGRES_ENV, asyncpg_dsn

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROCESSES = {"api0", "api1", "worker0", "worker1"}


def test_bench_soak_watches_the_cluster_under_steady_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plot = tmp_path / "soak.png"
    code = main(
        [
            "soak", "--database-url", os.environ[POSTGRES_ENV],
            "--rooms", "12", "--rate", "8", "--warmup", "4", "--duration", "12",
            "--interval", "2", "--per-room", "2", "--plot", str(plot), "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert (result["api_processes"], result["workers"]) == (2, 2)
    assert result["mutations"] == 8 * 16 - result["skipped"]
    assert result["control_failures"] == 0
    assert result["lost"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] < 10_000
    # Each room holds about two bookings: the data stays the same size, so growth is a leak.
    assert 12 <= result["bookings_held"] <= 12 * 3
    # Both API processes' streams saw the changes, whichever process's worker wrote them.
    assert result["stream_events"] > 0
    samples = result["samples"]
    assert len(samples) >= 7
    assert all(set(sample["rss_mb"]) == PROCESSES for sample in samples)
    assert all(30 < mb < 1000 for sample in samples for mb in sample["rss_mb"].values())
    assert set(result["rss_slope_mb_per_min"]) == PROCESSES
    assert all(sample["queue_depth"] >= 0 for sample in samples)
    # Every interval of the run has its freshness, from the changes sent in it.
    intervals = result["intervals"]
    assert len(intervals) == 8
    assert sum(row["changes"] for row in intervals) == result["mutations"]
    assert set(result["targets"]) == {"memory", "queue", "freshness"}
    assert plot.read_bytes().startswith(b"\x89PNG")
    # The processes ran with the allocator the service's image preloads (checked in each).
    assert result["allocator"] == "jemalloc"
    # Where the server runs no autovacuum, the benchmark stands in for it (the run is shorter
    # than its period: no pass yet).
    if asyncio.run(autovacuum_on(os.environ[POSTGRES_ENV])):
        assert result["vacuum_stand_in"] is None
    else:
        assert result["vacuum_stand_in"] == {"every_s": VACUUM_EVERY_S, "runs": 0, "max_s": None}


async def test_the_vacuum_stand_in_clears_the_dead_rows() -> None:
    server = os.environ[POSTGRES_ENV]
    name = f"bookingcache_vacuum_{secrets.token_hex(4)}"
    url = await create_database(server, name)
    try:
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
        try:
            await connection.execute("CREATE TABLE churn (n integer)")
            await connection.execute("INSERT INTO churn SELECT generate_series(1, 5000)")
            await connection.execute("DELETE FROM churn WHERE n > 100")

            async def dead_rows() -> int:
                await connection.execute("SELECT pg_stat_force_next_flush()")
                return int(
                    await connection.fetchval(
                        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'churn'"
                    )
                )

            assert await dead_rows() == 4900
            await vacuum(url)
            assert await dead_rows() == 0
        finally:
            await connection.close()
    finally:
        await drop_database(server, name)
