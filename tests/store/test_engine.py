"""URLs, engines, reachability and migrations."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, make_url, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from bookingcache.errors import InvalidInput, NotFound, StoreUnavailable
from bookingcache.store.sql import engine as engines
from bookingcache.store.sql.engine import normalize_database_url
from bookingcache.store.sql.schema import (
    UTCDateTime,
    inbox_batches,
    metadata,
    subscriptions,
)
from bookingcache.store.sql.store import SqlStore, open_store
from tests.support.databases import POSTGRES_ENV, asyncpg_dsn, sealing_box, writing
from tests.support.tenants import TENANT, add_tenant


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
        await open_store("postgresql://postgres@127.0.0.1:1/nothing", box=sealing_box())
    assert time.monotonic() - started < 10


async def test_unopenable_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await open_store(
            f"sqlite:///{tmp_path}/missing-directory/bookingcache.db", box=sealing_box()
        )


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
    await engines.migrate(store.engine, sealing_box())
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
    assert "ix_inbox_batches_tenant_id" in indexes["inbox_batches"]
    assert "inbox" not in indexes
    assert "ix_events_tenant_id_mailbox_start_utc" in indexes["events"]
    assert "ix_rooms_tenant_id_building_floor" in indexes["rooms"]


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def _scratch_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of its own: a SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/scratch.db"
        return
    async with _scratch_postgres("migrate") as (url, _):
        yield url


@contextlib.asynccontextmanager
async def _scratch_postgres(purpose: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A new PostgreSQL database, dropped afterwards: its URL, and a connection to the server's
    maintenance database (to drop it sooner)."""
    server = make_url(os.environ[POSTGRES_ENV])
    name = f"bookingcache_{purpose}_{uuid.uuid4().hex[:8]}"
    maintenance = await asyncpg.connect(asyncpg_dsn(os.environ[POSTGRES_ENV]), timeout=10)
    try:
        await maintenance.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False), maintenance
        finally:
            await maintenance.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await maintenance.close()


async def _migrate_to(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(Path(engines.__file__).parent / "migrations"))
        config.attributes["connection"] = connection
        config.attributes["secret_box"] = sealing_box()
        (command.downgrade if down else command.upgrade)(config, revision)

    async with writing(engine) as connection:
        await connection.run_sync(run)


# The inbox as revision 0003 had it: one row per accepted notification.
# The tenants table as revisions before 0009 had it (with the one read token's hash).
_OLD_TENANTS = sa.table(
    "tenants",
    *(sa.column(name) for name in ("id", "name", "event_source", "title_policy")),
    *(sa.column(name) for name in ("default_time_zone", "staleness_bound_s")),
    *(sa.column(name) for name in ("signing_secret", "read_token_sha256")),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)


def old_tenant(at: dt.datetime, **values: Any) -> dict[str, Any]:
    """Tenant ``acme`` as a row of the tenants table before revision 0009 (``_OLD_TENANTS``),
    created and updated ``at``; ``values`` in place of the usual ones."""
    return {
        "id": "acme",
        "name": "Acme",
        "event_source": "connector",
        "title_policy": "show",
        "default_time_zone": "UTC",
        "staleness_bound_s": 3600,
        "signing_secret": "whsec_x",
        "read_token_sha256": "0" * 64,
        "created_at": at,
        "updated_at": at,
    } | values


_OLD_INBOX = sa.table(
    "inbox",
    sa.column("tenant_id", sa.String()),
    sa.column("received_at", UTCDateTime()),
    sa.column("source", sa.String()),
    sa.column("subscription_id", sa.String()),
    sa.column("mailbox", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("change_type", sa.String()),
    sa.column("lifecycle_event", sa.String()),
    sa.column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("processed_at", UTCDateTime()),
)


def _old_row(at: dt.datetime, source: str, mailbox: str, kind: str, **extra: Any) -> dict[str, Any]:
    columns = ("subscription_id", "change_type", "lifecycle_event", "payload", "processed_at")
    row = {"tenant_id": "acme", "received_at": at, "source": source, "mailbox": mailbox}
    return row | {"kind": kind} | {column: extra.get(column) for column in columns}


@pytest.mark.parametrize("kind", ENGINES)
async def test_upgrading_keeps_the_old_inbox_as_batches_and_the_last_notifications(
    kind: str, tmp_path: Path
) -> None:
    t0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    t1, t2, t3 = (t0 + dt.timedelta(minutes=minutes) for minutes in (1, 2, 3))
    a, b, c = "a@acme.test", "b@acme.test", "c@acme.test"
    resource = "Users/a/Events/AAMk1"
    async with _scratch_database(kind, tmp_path) as url:
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0003")
            old = [
                _old_row(
                    t0,
                    "alt1",
                    a,
                    "change",
                    subscription_id="sub-a",
                    change_type="created",
                    payload={"resource": resource, "id": "AAMk1"},
                    processed_at=t0,
                ),
                _old_row(t1, "alt2", c, "resync", processed_at=t1),
                _old_row(t1, "alt1", b, "change", change_type="updated"),
                _old_row(t2, "alt2", a, "change", subscription_id="sub-a", change_type="updated"),
                _old_row(
                    t3, "alt1", a, "lifecycle", subscription_id="sub-a", lifecycle_event="missed"
                ),
            ]
            async with writing(engine) as connection:
                await connection.execute(
                    sa.insert(_OLD_TENANTS),
                    old_tenant(
                        t0, title_policy="hide", staleness_bound_s=900, signing_secret="whsec_eA=="
                    ),
                )
                await connection.execute(
                    subscriptions.insert(),
                    [
                        {"tenant_id": "acme", "mailbox": mailbox, "subscription_id": sub}
                        | {"status": "active", "updated_at": t0}
                        for mailbox, sub in ((a, "sub-a"), (c, "sub-c"))
                    ],
                )
                await connection.execute(sa.insert(_OLD_INBOX), old)
            await engines.migrate(engine, sealing_box())
        finally:
            await engine.dispose()
        # Refused unless at the newest schema.
        store = await open_store(url, box=sealing_box(), migrate=False)
        try:
            async with store.read() as connection:
                batches = (
                    await connection.execute(sa.select(inbox_batches).order_by(inbox_batches.c.id))
                ).all()
                noted = await connection.execute(
                    sa.select(subscriptions.c.mailbox, subscriptions.c.last_notification_at)
                )
                last_notified = {row.mailbox: row.last_notification_at for row in noted}
        finally:
            await store.close()
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0003", down=True)
            async with engine.connect() as connection:
                restored = (await connection.execute(sa.select(_OLD_INBOX))).all()
        finally:
            await engine.dispose()
    # Each old row becomes a batch of one, processed or not (the pending work is in the jobs).
    sub_a = {"subscriptionId": "sub-a", "mailbox": a}
    assert [(row.tenant_id, row.received_at, row.source) for row in batches] == [
        ("acme", t0, "alt1"),
        ("acme", t1, "alt2"),
        ("acme", t1, "alt1"),
        ("acme", t2, "alt2"),
        ("acme", t3, "alt1"),
    ]
    assert [(row._mapping["count"], row.notifications) for row in batches] == [
        (
            1,
            [
                {
                    "kind": "change",
                    **sub_a,
                    "changeType": "created",
                    "resource": resource,
                    "id": "AAMk1",
                }
            ],
        ),
        (1, [{"kind": "resync", "mailbox": c}]),
        (1, [{"kind": "change", "mailbox": b, "changeType": "updated"}]),
        (1, [{"kind": "change", **sub_a, "changeType": "updated"}]),
        (1, [{"kind": "missed", **sub_a}]),
    ]
    # A calendar's newest change notification lives on as its subscription's record (b has no
    # subscription, c's resync was no change notification).
    assert last_notified == {a: t2, c: None}

    # Downgrading expands the batches back into rows, all processed (the work is in the jobs).
    expected = [{**row, "processed_at": row["received_at"]} for row in old]
    assert sorted((dict(row._mapping) for row in restored), key=repr) == sorted(expected, key=repr)


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_database_with_intake_journal_marks_upgrades_cleanly(
    kind: str, tmp_path: Path
) -> None:
    """Revision 0005 recorded how far an intake journal was stored; 0006 drops the table."""
    marks = sa.table(
        "intake_journal_marks",
        sa.column("slot", sa.String()),
        sa.column("segment", sa.BigInteger()),
        sa.column("byte_offset", sa.BigInteger()),
        sa.column("updated_at", UTCDateTime()),
    )
    at = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    async with _scratch_database(kind, tmp_path) as url:
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0005")
            async with writing(engine) as connection:
                await connection.execute(
                    sa.insert(marks),
                    {"slot": "slot-0", "segment": 3, "byte_offset": 512, "updated_at": at},
                )
            await engines.migrate(engine, sealing_box())
            async with engine.connect() as connection:
                tables = await connection.run_sync(
                    lambda sync: set(sa.inspect(sync).get_table_names())
                )
            assert "intake_journal_marks" not in tables
            assert await engines.migrations_at_head(engine)
            await _migrate_to(engine, "0005", down=True)
            async with engine.connect() as connection:
                assert (await connection.execute(sa.select(marks))).all() == []
        finally:
            await engine.dispose()


@pytest.mark.parametrize("kind", ENGINES)
async def test_rooms_linked_before_capacities_upgrade_without_one(
    kind: str, tmp_path: Path
) -> None:
    """Revision 0007 adds ``rooms.capacity``: rooms linked before it have none, and going back
    drops the column with what it held."""
    at = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    old_rooms = sa.table(
        "rooms",
        *(sa.column(name) for name in ("tenant_id", "room_id", "mailbox", "name")),
        sa.column("updated_at", UTCDateTime()),
    )
    async with _scratch_database(kind, tmp_path) as url:
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0006")
            async with writing(engine) as connection:
                await connection.execute(sa.insert(_OLD_TENANTS), old_tenant(at))
                await connection.execute(
                    sa.insert(old_rooms),
                    {
                        "tenant_id": "acme",
                        "room_id": "r1",
                        "mailbox": "a@acme.test",
                        "name": "A",
                        "updated_at": at,
                    },
                )
            await engines.migrate(engine, sealing_box())
            assert await engines.migrations_at_head(engine)
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(sa.text("SELECT room_id, capacity FROM rooms"))
                ).all()
            assert [tuple(row) for row in rows] == [("r1", None)]
            await _migrate_to(engine, "0006", down=True)
            async with engine.connect() as connection:
                columns = await connection.run_sync(
                    lambda sync: {
                        column["name"] for column in sa.inspect(sync).get_columns("rooms")
                    }
                )
                kept = (await connection.execute(sa.select(old_rooms.c.room_id))).scalars().all()
            assert "capacity" not in columns
            assert kept == ["r1"]
        finally:
            await engine.dispose()


async def test_store_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    with pytest.raises(StoreUnavailable, match="migration"):
        await open_store(url, box=sealing_box(), migrate=False)
    store = await open_store(url, box=sealing_box(), migrate=True)
    try:
        await store.ping()
    finally:
        await store.close()


async def test_sqlite_with_fsync_flushes_every_commit(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/bookingcache.db", box=sealing_box(), fsync=True)
    try:
        async with store.read() as conn:
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
        # The writer's own connection, which every write transaction uses, flushes too.
        synchronous = await store.transaction(
            lambda conn: conn.execute(text("PRAGMA synchronous")).scalar()
        )
        assert synchronous == 2
    finally:
        await store.close()


async def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "bookingcache.db"
    store = await open_store(f"sqlite:///{path}", box=sealing_box())
    try:
        await add_tenant(store)  # a write: the write-ahead log and shared memory exist now
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert {file.name: stat.S_IMODE(file.stat().st_mode) for file in files} == {
            file.name: 0o600 for file in files
        }
    finally:
        await store.close()


async def test_writes_go_on_after_a_failed_transaction(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/bookingcache.db", box=sealing_box())
    try:
        with pytest.raises(NotFound):
            await store.delete_tenant("nobody")  # the service's error: rolled back
        with pytest.raises(StoreUnavailable):  # the database's: a new connection
            await store.transaction(lambda conn: conn.execute(text("SELECT * FROM no_table")))
        rooms = await add_tenant(store)
        assert {link.mailbox for link in await store.list_rooms(TENANT)} == set(rooms)
    finally:
        await store.close()


async def test_an_existing_sqlite_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "bookingcache.db"
    path.touch()
    path.chmod(0o640)  # the operator's choice, say for a backup group
    store = await open_store(f"sqlite:///{path}", box=sealing_box())
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/bookingcache.db", box=sealing_box())
    try:
        async with store.read() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 10_000
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_database_that_goes_away_is_store_unavailable() -> None:
    async with _scratch_postgres("gone") as (url, maintenance):
        store = await open_store(url, box=sealing_box())
        try:
            assert await store.list_tenants() == []
            await maintenance.execute(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)')
            with pytest.raises(StoreUnavailable):
                await store.list_tenants()
            with pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            await store.close()


async def test_waiting_for_a_sqlite_file_in_a_missing_directory_fails_at_once(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await engines.wait_for_database(f"sqlite:///{tmp_path}/nope/bc.db", timeout_s=30)
    assert time.monotonic() - started < 5
