"""URLs, engines, reachability and migrations."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, make_url, text

from bookingcache.errors import InvalidInput, StoreUnavailable
from bookingcache.store import engine as engines
from bookingcache.store.engine import normalize_database_url
from bookingcache.store.schema import metadata
from bookingcache.store.sql import SqlStore, open_store

POSTGRES_ENV = "BOOKINGCACHE_TEST_DATABASE_URL"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/bc", "postgresql+asyncpg://u:p@db:5432/bc"),
        ("postgres://u@db/bc", "postgresql+asyncpg://u@db/bc"),
        ("postgresql+asyncpg://u@db/bc", "postgresql+asyncpg://u@db/bc"),
        ("sqlite:///var/lib/bc.db", "sqlite+aiosqlite:///var/lib/bc.db"),
        ("sqlite:////abs/bc.db", "sqlite+aiosqlite:////abs/bc.db"),
        ("sqlite+aiosqlite:///bc.db", "sqlite+aiosqlite:///bc.db"),
        ("  SQLite:///bc.db ", "sqlite+aiosqlite:///bc.db"),
    ],
)
def test_normalize_database_url(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_default_database_lives_in_the_data_directory(tmp_path: Path) -> None:
    expected = f"sqlite+aiosqlite:///{tmp_path.resolve()}/bookingcache.db"
    assert normalize_database_url(None, data_dir=tmp_path) == expected
    assert normalize_database_url("", data_dir=tmp_path) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "mysql://root@db/bc",
        "postgresql+psycopg2://u@db/bc",
        "not a url",
        "sqlite://",
        "sqlite:///:memory:",
    ],
)
def test_unsupported_urls_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_database_url(bad)


async def test_unreachable_postgresql_is_store_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await open_store("postgresql://postgres@127.0.0.1:1/nothing")
    assert time.monotonic() - started < 10


async def test_unopenable_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await open_store(f"sqlite:///{tmp_path}/missing-directory/bookingcache.db")


async def test_wait_for_database_gives_up_after_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await engines.wait_for_database(
            "postgresql://postgres@127.0.0.1:1/nothing", timeout_s=0.3, interval_s=0.1
        )
    assert time.monotonic() - started < 5


async def test_wait_for_database_returns_when_reachable(database_url: str) -> None:
    await engines.wait_for_database(database_url, timeout_s=5)


async def test_migrations_are_at_head(store: SqlStore) -> None:
    assert await engines.migrations_at_head(store.engine)
    await store.ping()
    # Migrating again is a no-op.
    await engines.migrate(store.engine)
    assert await engines.migrations_at_head(store.engine)


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _index_names(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {
        table: {index["name"] for index in inspector.get_indexes(table) if index["name"]}
        for table in inspector.get_table_names()
    }


async def test_migrated_schema_matches_the_table_definitions(store: SqlStore) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_schema_differences) == []
        indexes = await conn.run_sync(_index_names)
    assert "ux_jobs_pending" in indexes["jobs"]
    assert "ix_inbox_pending_calendar" in indexes["inbox"]
    assert "ix_events_tenant_id_mailbox_start_utc" in indexes["events"]
    assert "ix_rooms_tenant_id_building_floor" in indexes["rooms"]


async def test_store_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    with pytest.raises(StoreUnavailable, match="migration"):
        await open_store(url, migrate=False)
    store = await open_store(url, migrate=True)
    try:
        await store.ping()
    finally:
        await store.close()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/bookingcache.db")
    try:
        async with store.read() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 10_000
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} unset")
async def test_a_database_that_goes_away_is_store_unavailable() -> None:
    server = make_url(os.environ[POSTGRES_ENV])
    name = f"bookingcache_gone_{uuid.uuid4().hex[:8]}"
    maintenance = await asyncpg.connect(
        server.set(drivername="postgresql").render_as_string(hide_password=False), timeout=10
    )
    try:
        await maintenance.execute(f'CREATE DATABASE "{name}"')
        store = await open_store(server.set(database=name).render_as_string(hide_password=False))
        try:
            assert await store.list_tenants() == []
            await maintenance.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            with pytest.raises(StoreUnavailable):
                await store.list_tenants()
            with pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            await store.close()
    finally:
        await maintenance.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await maintenance.close()


async def test_waiting_for_a_sqlite_file_in_a_missing_directory_fails_at_once(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await engines.wait_for_database(f"sqlite:///{tmp_path}/nope/bc.db", timeout_s=30)
    assert time.monotonic() - started < 5
