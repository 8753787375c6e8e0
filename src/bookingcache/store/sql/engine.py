"""Database URLs, engines and migrations for the two supported engines.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``, a busy timeout and
foreign keys on. The sqlite3 driver's own transaction handling is switched off and SQLAlchemy
emits ``BEGIN`` itself, so that write transactions can start with ``BEGIN IMMEDIATE``: the
write lock is taken up front and two writers never interleave or fail half-way with
``database is locked``. PostgreSQL is reached through asyncpg with a bounded pool.

Every engine hides a statement's parameters from its errors (``hide_parameters``): they may be
a clientState, a signing secret or a token's hash, and a failed write is logged with its error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, make_url, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from bookingcache.errors import InvalidInput, StoreUnavailable
from bookingcache.store.sealing import SecretBox

DATABASE_FILE = "bookingcache.db"
WRITE_OPTION = "bookingcache_write"
SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5.0
_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_KEY = 0x626F6F6B  # "book": serialises concurrent migrations on PostgreSQL


def default_database_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file in the data directory."""
    return f"sqlite+aiosqlite:///{(data_dir / DATABASE_FILE).resolve()}"


def normalize_database_url(url: str | None, *, data_dir: Path | None = None) -> str:
    """The async SQLAlchemy URL for ``url``.

    Accepts ``postgresql://``, ``postgres://``, ``postgresql+asyncpg://``, ``sqlite:///path``
    and ``sqlite+aiosqlite:///path``; ``None`` or an empty string means the SQLite file in
    ``data_dir`` (default ``./data``). Anything else is refused with ``InvalidInput``.
    """
    if not url or not url.strip():
        return default_database_url(data_dir or Path("data"))
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidInput(f"not a database URL: {_redact(url)!r}")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        normalized = f"postgresql+asyncpg://{rest}"
    elif scheme in ("sqlite", "sqlite+aiosqlite"):
        normalized = f"sqlite+aiosqlite://{rest}"
    else:
        raise InvalidInput(
            f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite:///path"
        )
    try:
        parsed = make_url(normalized)
    except ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {_redact(url)!r}") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise InvalidInput("an in-memory SQLite database is not supported; give a file path")
    return normalized


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable>"


def check_sqlite_directory(url: str) -> None:
    """``StoreUnavailable`` when a SQLite file would go in a directory that does not exist
    (SQLite cannot create it, and failing before connecting gives the clearer message)."""
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    directory = Path(parsed.database).parent
    if not directory.is_dir():
        raise StoreUnavailable(f"the SQLite database directory {str(directory)!r} does not exist")


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite store's file, if it is not there yet, readable by its owner only (0600):
    it holds the tenants' signing secrets and clientStates. SQLite gives its write-ahead log
    and shared-memory files the database file's permissions. An existing file is left as it
    is."""
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    check_sqlite_directory(url)
    try:
        descriptor = os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the SQLite database file: {exc}") from exc
    os.close(descriptor)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def is_sqlite_busy(exc: DBAPIError) -> bool:
    """Whether SQLite refused because another connection holds the lock it needs."""
    orig = exc.orig
    return isinstance(orig, sqlite3.OperationalError) and getattr(
        orig, "sqlite_errorcode", None
    ) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def sqlite_synchronous(fsync: bool) -> str:
    """SQLite's ``synchronous`` setting: ``FULL`` flushes the write-ahead log to disk at every
    commit (a commit survives a power cut), ``NORMAL`` leaves it to the operating system (a
    commit survives the process being killed)."""
    return "FULL" if fsync else "NORMAL"


# How long a session may sit idle inside a transaction before the server ends it.
IDLE_TRANSACTION_S = 10.0
POOL_SIZE = 10  # the main pool's connections (it may grow by as many again on PostgreSQL)
# A PostgreSQL connection is checked before use only when it has been idle this long.
PING_AFTER_IDLE_S = 1.0
_USED_AT = "bookingcache_used_at"


def create_engine(
    url: str,
    *,
    pool_size: int = POOL_SIZE,
    fsync: bool = False,
    idle_transaction_s: float = IDLE_TRANSACTION_S,
) -> AsyncEngine:
    """An engine for a URL accepted by ``normalize_database_url`` (normalized here). ``fsync``:
    on SQLite, every commit is flushed to disk (``sqlite_synchronous``); PostgreSQL's own
    settings decide there. ``idle_transaction_s``: on PostgreSQL, a session idle inside a
    transaction for longer is ended by the server (a stopped or starved process's locks go).
    ``pool_size``: the pool's connections; on PostgreSQL it may grow by as many again.

    On PostgreSQL the pool keeps every connection it opened, up to twice ``pool_size``: one
    closed after each use beyond ``pool_size`` would have the server start a new session many
    times a second under load. A connection idle for ``PING_AFTER_IDLE_S`` or more is checked
    before use (``_ping_after_idle``), so one the server ended while it sat in the pool (a
    restart, a failover) is replaced instead of failing a transaction; one used moments ago is
    not (the check is three round trips)."""
    normalized = normalize_database_url(url)
    parsed: URL = make_url(normalized)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(normalized, pool_size=pool_size, fsync=fsync)
    engine = create_async_engine(
        normalized,
        hide_parameters=True,
        pool_size=2 * pool_size,
        max_overflow=0,
        pool_timeout=CONNECT_TIMEOUT_S * 2,
        pool_recycle=1800,
        connect_args={
            "timeout": CONNECT_TIMEOUT_S,
            "command_timeout": 60,
            "server_settings": {
                "application_name": "bookingcache",
                "idle_in_transaction_session_timeout": str(round(idle_transaction_s * 1000)),
                # Short statements only: compiling one costs more than it runs (a claim over a
                # queue table full of dead rows passes jit_above_cost; docs/operations.md).
                "jit": "off",
            },
        },
    )
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use when it has been idle ``PING_AFTER_IDLE_S`` or
    more. One that fails the check is replaced by a new connection (the pool retries the
    checkout on ``DisconnectionError``); a new connection needs no check."""
    dialect = engine.dialect

    def used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_USED_AT] = time.monotonic()

    def check(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        last = record.info.get(_USED_AT)
        if last is None or time.monotonic() - last < PING_AFTER_IDLE_S:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("the pooled connection failed its check") from exc
        if not alive:
            raise DisconnectionError("the pooled connection failed its check")

    event.listen(engine.sync_engine.pool, "checkin", used)
    event.listen(engine.sync_engine.pool, "checkout", check)


def _sqlite_settings(fsync: bool) -> Callable[[Any, ConnectionPoolEntry], None]:
    """What every SQLite connection of the store is opened with, for reads and writes alike."""

    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Hand transaction control to SQLAlchemy (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous(fsync)}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return on_connect


def _sqlite_engine(url: str, *, pool_size: int, fsync: bool) -> AsyncEngine:
    engine = create_async_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine.sync_engine, "connect", _sqlite_settings(fsync))

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def sqlite_writer_engine(url: URL, *, fsync: bool) -> Engine:
    """The synchronous engine of a SQLite store's writer thread: the standard library's driver
    on the same file, one connection, the same connection settings, and every transaction a
    ``BEGIN IMMEDIATE`` (``SqlBase.transaction``)."""
    engine = sa_create_engine(
        url.set(drivername="sqlite+pysqlite"),
        hide_parameters=True,
        poolclass=StaticPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_settings(fsync))

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Straight to the driver: SQLAlchemy's way of running a statement (its events, its
        # result) cost more than the statement, once per write transaction. A failure is
        # wrapped as SQLAlchemy wraps it (``OperationalError`` for a locked database).
        driver = connection.connection.dbapi_connection
        assert driver is not None
        try:
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                "BEGIN IMMEDIATE", None, exc, sqlite3.Error, hide_parameters=True
            ) from exc

    return engine


async def wait_for_database(url: str, timeout_s: float, *, interval_s: float = 0.5) -> None:
    """Return once the database answers; ``StoreUnavailable`` after ``timeout_s`` (at once for
    a SQLite file whose directory does not exist: waiting would not create it)."""
    check_sqlite_directory(url)
    engine = create_engine(url, pool_size=1)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
                return
            except Exception as exc:  # any failure to connect is "not yet reachable"
                if time.monotonic() + interval_s > deadline:
                    raise StoreUnavailable(f"database not reachable: {exc}") from exc
                await asyncio.sleep(interval_s)
    finally:
        await engine.dispose()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@functools.cache
def _head_revisions() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(_alembic_config()).get_heads())


def _upgrade(connection: Connection, box: SecretBox) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    current = _current_revisions(connection)
    if current and not current <= _known_revisions():
        return  # a newer version migrated past this one's newest revision (``migrations_at_head``)
    config = _alembic_config()
    config.attributes["connection"] = connection
    # Migrations that seal stored secrets (0008) take the store's keys from here.
    config.attributes["secret_box"] = box
    command.upgrade(config, "head")


def _current_revisions(connection: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


async def migrate(engine: AsyncEngine, box: SecretBox) -> None:
    """Upgrade the database to the newest migration (one transaction); ``box`` seals the
    secrets a migration finds in plain text."""
    async with engine.connect() as connection:
        connection = await connection.execution_options(**{WRITE_OPTION: True})
        async with connection.begin():
            await connection.run_sync(_upgrade, box)


class _QuietMigrationContext(logging.Filter):
    """Alembic logs which dialect it uses and how it runs DDL every time it looks at the
    schema's revision, which the readiness check and the database probe do every few seconds:
    those two lines are left out (what migrations run is still logged)."""

    _NOISE = ("Context impl %s.", "Will assume %s DDL.")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._NOISE


logging.getLogger("alembic.runtime.migration").addFilter(_QuietMigrationContext())


@functools.cache
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(_alembic_config())
    return frozenset(revision.revision for revision in script.walk_revisions())


async def migrations_at_head(engine: AsyncEngine) -> bool:
    """Whether this version can work on the schema: it is at this version's newest migration,
    or past it. A revision this version does not know was written by a newer version's
    ``bookingcache migrate``, which a rolling upgrade runs while this version still serves
    (docs/operations.md, "Upgrades"); a known revision before the newest is behind."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revisions)
    if current == _head_revisions():
        return True
    return bool(current) and not current <= _known_revisions()
