"""Work on a PostgreSQL server beside the service's own database: a database of its own made
and dropped (for benchmarks and tests), and autovacuum's settings and one visit of its, for a
benchmark on a server that runs without it. Each call opens a connection of its own, outside any
pool, and closes it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from sqlalchemy import make_url
from sqlalchemy.engine import URL

from bookingcache.errors import InvalidInput
from bookingcache.store.sql.engine import CONNECT_TIMEOUT_S, normalize_database_url


def _postgres_server(server_url: str) -> URL:
    server = make_url(normalize_database_url(server_url))
    if server.get_backend_name() != "postgresql":
        raise InvalidInput("a database can only be created on a PostgreSQL server")
    return server


async def _on_server(server: URL, statement: str) -> None:
    async with _connected(server) as connection:
        await connection.execute(statement)


@contextlib.asynccontextmanager
async def _connected(url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own to the PostgreSQL database of ``url``, outside any pool."""
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        yield connection
    finally:
        await connection.close()


async def create_database(server_url: str, name: str) -> str:
    """Create the empty database ``name`` on the PostgreSQL server of ``server_url`` (for
    benchmarks and tests that want a database of their own); returns its URL."""
    server = _postgres_server(server_url)
    await _on_server(server, f'CREATE DATABASE "{_identifier(name)}"')
    return server.set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, name: str) -> None:
    """Drop the database ``name`` of the PostgreSQL server of ``server_url``, closing the
    connections still open to it."""
    server = _postgres_server(server_url)
    await _on_server(server, f'DROP DATABASE IF EXISTS "{_identifier(name)}" WITH (FORCE)')


# The tables one visit of autovacuum's would take (PostgreSQL 13 and later, the server's own
# thresholds): vacuumed once their dead rows, or the rows inserted since their last vacuum, pass
# a threshold plus a share of their rows; analyzed once the rows changed since their last
# analyze pass theirs. A table never analyzed counts no rows (``reltuples`` -1), as autovacuum
# counts it.
_AUTOVACUUM_DUE = """
SELECT format('%I.%I', s.schemaname, s.relname) AS name,
       s.n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8
           + current_setting('autovacuum_vacuum_scale_factor')::float8 * r.rows
       OR (current_setting('autovacuum_vacuum_insert_threshold')::float8 >= 0
           AND s.n_ins_since_vacuum > current_setting('autovacuum_vacuum_insert_threshold')::float8
               + current_setting('autovacuum_vacuum_insert_scale_factor')::float8 * r.rows)
           AS vacuum,
       s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
           + current_setting('autovacuum_analyze_scale_factor')::float8 * r.rows AS analyze
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
CROSS JOIN LATERAL (SELECT greatest(c.reltuples, 0)::float8 AS rows) AS r
ORDER BY s.schemaname, s.relname
"""
# Autovacuum's pace and period, with its ``-1`` ("as a manual VACUUM") resolved; in the units
# ``SET`` takes (milliseconds, cost units, seconds).
_AUTOVACUUM_PACE = """
SELECT (SELECT CASE WHEN a.setting::float8 < 0 THEN v.setting ELSE a.setting END
        FROM pg_settings AS a, pg_settings AS v
        WHERE a.name = 'autovacuum_vacuum_cost_delay' AND v.name = 'vacuum_cost_delay')
           AS cost_delay_ms,
       (SELECT CASE WHEN a.setting::int < 0 THEN v.setting ELSE a.setting END
        FROM pg_settings AS a, pg_settings AS v
        WHERE a.name = 'autovacuum_vacuum_cost_limit' AND v.name = 'vacuum_cost_limit')
           AS cost_limit,
       (SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime') AS naptime_s
"""


@dataclass(frozen=True)
class AutovacuumPace:
    """How autovacuum works through a database: one visit every ``naptime_s``, its reads and
    writes paced by ``cost_limit`` units, then a ``cost_delay_ms`` sleep."""

    cost_delay_ms: float
    cost_limit: int
    naptime_s: float


@dataclass(frozen=True)
class AutovacuumVisit:
    """The tables one stand-in visit vacuumed (with an analyze where also due) and analyzed."""

    vacuumed: tuple[str, ...]
    analyzed: tuple[str, ...]


async def autovacuum_on(database_url: str) -> bool:
    """Whether the PostgreSQL server of ``database_url`` runs autovacuum (its default)."""
    async with _connected(_postgres_server(database_url)) as connection:
        return bool(await connection.fetchval("SELECT current_setting('autovacuum')::boolean"))


async def autovacuum_pace(database_url: str) -> AutovacuumPace:
    """The pace and period the server of ``database_url`` gives its autovacuum."""
    async with _connected(_postgres_server(database_url)) as connection:
        return await _pace(connection)


async def _pace(connection: asyncpg.Connection) -> AutovacuumPace:
    row = await connection.fetchrow(_AUTOVACUUM_PACE)
    return AutovacuumPace(
        cost_delay_ms=float(row["cost_delay_ms"]),
        cost_limit=int(row["cost_limit"]),
        naptime_s=float(row["naptime_s"]),
    )


async def autovacuum_visit(database_url: str) -> AutovacuumVisit:
    """What one visit of autovacuum to the PostgreSQL database at ``database_url`` does, for a
    benchmark on a server that runs without it: each table past the server's thresholds is
    vacuumed or analyzed, one after another, at autovacuum's cost-based pace, not at a manual
    ``VACUUM``'s full speed."""
    async with _connected(_postgres_server(database_url)) as connection:
        pace = await _pace(connection)
        await connection.execute(
            "SELECT set_config('vacuum_cost_delay', $1, false),"
            " set_config('vacuum_cost_limit', $2, false)",
            f"{pace.cost_delay_ms:g}",
            str(pace.cost_limit),
        )
        vacuumed: list[str] = []
        analyzed: list[str] = []
        for row in await connection.fetch(_AUTOVACUUM_DUE):
            # The name comes quoted from the server's own format('%I.%I').
            if row["vacuum"]:
                analyze = "ANALYZE, " if row["analyze"] else ""
                await connection.execute(f"VACUUM ({analyze}SKIP_LOCKED) {row['name']}")
                vacuumed.append(row["name"])
            elif row["analyze"]:
                await connection.execute(f"ANALYZE (SKIP_LOCKED) {row['name']}")
                analyzed.append(row["name"])
        return AutovacuumVisit(tuple(vacuumed), tuple(analyzed))


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[0].isalpha() or len(name) > 63:
        raise InvalidInput(f"not a plain database name: {name!r}")
    return name
