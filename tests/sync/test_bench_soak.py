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

from bookingcache.store.sql.pgserver import (
    AutovacuumVisit,
    autovacuum_on,
    autovacuum_pace,
    autovacuum_visit,
    create_database,
    drop_database,
)
from bookingcache.tools.bench import main
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
        naptime_s = asyncio.run(autovacuum_pace(os.environ[POSTGRES_ENV])).naptime_s
        assert result["vacuum_stand_in"] == {
            "every_s": naptime_s,
            "runs": 0,
            "tables_vacuumed": 0,
            "tables_analyzed": 0,
            "max_s": None,
        }


async def test_the_vacuum_stand_in_takes_what_autovacuum_would() -> None:
    """A visit vacuums the table past autovacuum's threshold, analyzes the one only past the
    analyze threshold, and leaves the one past neither with its dead rows."""
    server = os.environ[POSTGRES_ENV]
    name = f"bookingcache_vacuum_{secrets.token_hex(4)}"
    url = await create_database(server, name)
    try:
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
        try:
            for table in ("churn", "changed", "calm"):
                await connection.execute(f"CREATE TABLE {table} (n integer)")
                await connection.execute(f"INSERT INTO {table} SELECT generate_series(1, 5000)")
                # The inserts counted before the vacuum that settles them.
                await connection.execute("SELECT pg_stat_force_next_flush()")
                await connection.execute(f"VACUUM (ANALYZE) {table}")
            # 4,900 dead of 5,000: past 50 + 20% of the rows (autovacuum's defaults).
            await connection.execute("DELETE FROM churn WHERE n > 100")
            # 600 changed: past the analyze threshold (50 + 10%), not the vacuum one (50 + 20%).
            await connection.execute("DELETE FROM changed WHERE n > 4400")
            # 100 dead: past neither.
            await connection.execute("DELETE FROM calm WHERE n > 4900")

            async def dead_rows() -> dict[str, int]:
                await connection.execute("SELECT pg_stat_force_next_flush()")
                rows = await connection.fetch("SELECT relname, n_dead_tup FROM pg_stat_user_tables")
                return {row["relname"]: row["n_dead_tup"] for row in rows}

            assert await dead_rows() == {"churn": 4900, "changed": 600, "calm": 100}
            assert await autovacuum_visit(url) == AutovacuumVisit(
                vacuumed=("public.churn",), analyzed=("public.changed",)
            )
            assert await dead_rows() == {"churn": 0, "changed": 600, "calm": 100}
            # The next visit finds nothing due.
            assert await autovacuum_visit(url) == AutovacuumVisit(vacuumed=(), analyzed=())
        finally:
            await connection.close()
    finally:
        await drop_database(server, name)


async def test_the_stand_in_keeps_autovacuum_s_pace() -> None:
    """The pace is the server's autovacuum settings, with ``-1`` read as the manual one's."""
    connection = await asyncpg.connect(asyncpg_dsn(os.environ[POSTGRES_ENV]), timeout=10)
    try:
        rows = await connection.fetch("SELECT name, setting FROM pg_settings")
        settings = {row["name"]: row["setting"] for row in rows}
    finally:
        await connection.close()

    def resolved(own: str, manual: str) -> float:
        value = float(settings[own])
        return float(settings[manual]) if value < 0 else value

    pace = await autovacuum_pace(os.environ[POSTGRES_ENV])
    assert pace.cost_delay_ms == resolved("autovacuum_vacuum_cost_delay", "vacuum_cost_delay")
    assert pace.cost_limit == resolved("autovacuum_vacuum_cost_limit", "vacuum_cost_limit")
    assert pace.naptime_s == float(settings["autovacuum_naptime"])
    # Autovacuum sleeps between its rounds of work; a manual VACUUM (delay 0) would not.
    assert pace.cost_delay_ms > 0
