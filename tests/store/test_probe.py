"""The database probe behind ``bookingcache_database_up``, against a real database that stops
answering or falls behind the newest schema."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bookingcache.store.probe import DatabaseMetrics, DatabaseProbe
from bookingcache.store.sql import pgserver
from bookingcache.store.sql.store import SqlStore, open_store
from tests.support.databases import POSTGRES_ENV, asyncpg_dsn, sealing_box


def _set_revision(revision: str) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})

    return work


async def test_the_probe_says_when_the_schema_is_behind(store: SqlStore) -> None:
    async with store.read() as connection:
        head = str(
            (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        )
    registry = CollectorRegistry()
    probe = DatabaseProbe(store, DatabaseMetrics.of(registry))
    assert registry.get_sample_value("bookingcache_database_up") == 0  # nothing checked yet
    assert await probe.check()
    assert registry.get_sample_value("bookingcache_database_up") == 1
    await store.transaction(_set_revision("0005"))
    assert not await probe.check()
    assert registry.get_sample_value("bookingcache_database_up") == 0
    await store.transaction(_set_revision(head))
    assert await probe.check()
    assert registry.get_sample_value("bookingcache_database_up") == 1


@pytest.mark.postgres
async def test_the_probe_says_when_postgresql_refuses_connections() -> None:
    server = os.environ[POSTGRES_ENV]
    name = f"bookingcache_probe_{uuid.uuid4().hex[:10]}"
    url = await pgserver.create_database(server, name)
    maintenance = await asyncpg.connect(asyncpg_dsn(server), timeout=10)
    try:
        store = await open_store(url, box=sealing_box(), migrate=True)
        registry = CollectorRegistry()
        probe = DatabaseProbe(store, DatabaseMetrics.of(registry), timeout_s=3)
        try:
            assert await probe.check()
            assert registry.get_sample_value("bookingcache_database_up") == 1
            await maintenance.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await maintenance.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            assert not await probe.check()
            assert registry.get_sample_value("bookingcache_database_up") == 0
            await maintenance.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert await probe.check()
            assert registry.get_sample_value("bookingcache_database_up") == 1
        finally:
            await store.close()
    finally:
        await maintenance.close()
        await pgserver.drop_database(server, name)


async def test_a_schema_a_newer_version_migrated_counts_as_up(
    store: SqlStore, database_url: str
) -> None:
    """A rolling upgrade migrates before the processes of the old version are replaced: they
    still work on the schema, so they stay ready and up, and one that restarts leaves the
    schema as it is."""
    async with store.read() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        head = str(result.scalar())
    registry = CollectorRegistry()
    probe = DatabaseProbe(store, DatabaseMetrics.of(registry))
    await store.transaction(_set_revision("9001_of_a_newer_version"))
    try:
        assert await probe.check()
        await store.ping()
        restarted = await open_store(database_url, box=sealing_box(), migrate=True)
        await restarted.close()
        async with store.read() as connection:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert result.scalar() == "9001_of_a_newer_version"
    finally:
        await store.transaction(_set_revision(head))


async def test_a_check_logs_nothing_of_alembic(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Every process checks every 5 s: Alembic's two lines per look at the revision would be
    most of the log."""
    caplog.set_level(logging.INFO)
    await store.ping()
    assert [record.getMessage() for record in caplog.records] == []
