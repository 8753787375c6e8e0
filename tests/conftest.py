"""Shared fixtures of the service tests: a migrated, empty database on every engine under test.

``database_url`` is parametrised over ``sqlite`` (always) and ``postgres`` (when
``BOOKINGCACHE_TEST_DATABASE_URL`` names a server). For PostgreSQL one database with a unique
name is created on that server per test session and dropped at its end, so concurrent runs
never meet; between tests its tables are emptied. For SQLite each test gets a copy of a
database migrated once per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import make_url

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from bookingcache.store.sql.schema import metadata
from bookingcache.store.sql.store import SqlStore, open_store
from tests.support import secrets_scan, serial_ast
from tests.support.auth import ADMIN_TOKEN
from tests.support.databases import (
    POSTGRES_ENV,
    SECRETS_KEY,
    asyncpg_dsn,
    opened_store,
    sealing_box,
)

# Before any test starts a thread (tests/support/serial_ast.py says why).
serial_ast.install()

T = TypeVar("T")

# A Monday morning; an area whose tests need another moment overrides ``clock_start``.
CLOCK_START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on its own loop in a worker thread (session set-up runs
    outside the tests' event loops and must not disturb them)."""

    async def main() -> T:
        return await factory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _migrate(url: str) -> None:
    store = await open_store(url, box=sealing_box(), migrate=True)
    await store.close()


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get(POSTGRES_ENV):
        return "PostgreSQL: on (the tests marked postgres run too)"
    return (
        f"PostgreSQL: off (the tests marked postgres are left out; set {POSTGRES_ENV}="
        "postgresql://postgres@127.0.0.1:5432/test to run them)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL server to use, its tests are left out (deselected, counted once in
    the summary) rather than reported skipped one by one."""
    if os.environ.get(POSTGRES_ENV):
        return
    kept = [item for item in items if item.get_closest_marker("postgres") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


_DATABASE_PREFIX = "bookingcache_test_"
# Several hosts may share one server: a run only ever cleans up after its own host.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


async def _drop_abandoned(conn: asyncpg.Connection) -> None:
    """Drop the test databases of runs on this host that died before their clean-up."""
    names = await conn.fetch(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
        f"{_DATABASE_PREFIX}{_HOST}_",
    )
    for (name,) in names:
        pid = name.removeprefix(f"{_DATABASE_PREFIX}{_HOST}_").split("_")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def _postgres_url() -> Iterator[str | None]:
    server_url = os.environ.get(POSTGRES_ENV)
    if not server_url:
        yield None
        return
    server = make_url(server_url)
    name = f"{_DATABASE_PREFIX}{_HOST}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    test_url = server.set(database=name).render_as_string(hide_password=False)
    maintenance = asyncpg_dsn(server_url)

    async def create() -> None:
        conn = await asyncpg.connect(maintenance, timeout=10)
        try:
            await _drop_abandoned(conn)
            await conn.execute(f'CREATE DATABASE "{name}"')
            # A throwaway database: commits need not wait for the disk.
            await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        finally:
            await conn.close()
        await _migrate(test_url)

    async def drop() -> None:
        conn = await asyncpg.connect(maintenance, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run(create)
    try:
        yield test_url
    finally:
        _run(drop)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    _run(lambda: _migrate(f"sqlite:///{path}"))
    return path


# Children first. DELETE on tables this small is far cheaper than TRUNCATE, which PostgreSQL
# implements with new files and a checkpoint-visible catalog change.
_CLEAR = "; ".join(f"DELETE FROM {table.name}" for table in reversed(metadata.sorted_tables))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _sqlite_template: Path,
    _postgres_url: str | None,
) -> str:
    """The URL of a migrated database with empty tables."""
    if request.param == "sqlite":
        path = tmp_path / "bookingcache.db"
        shutil.copyfile(_sqlite_template, path)
        return f"sqlite:///{path}"
    assert _postgres_url is not None
    conn = await asyncpg.connect(asyncpg_dsn(_postgres_url), timeout=10)
    try:
        await conn.execute(_CLEAR)
    finally:
        await conn.close()
    return _postgres_url


@pytest.fixture
def clock_start() -> dt.datetime:
    """Where ``clock`` starts."""
    return CLOCK_START


@pytest.fixture
def clock(clock_start: dt.datetime) -> FixedClock:
    """The time every part of the app under test reads; the test moves it."""
    return FixedClock(clock_start)


@pytest.fixture
async def other_store(database_url: str) -> AsyncIterator[SqlStore]:
    """The test database on a store of its own, as another service process would have it (no
    in-process signals from the test's ``store``; the system clock)."""
    async with opened_store(database_url) as opened:
        yield opened


@pytest.fixture
async def store(database_url: str, clock: FixedClock) -> AsyncIterator[SqlStore]:
    """An opened ``SqlStore`` on an empty, migrated database, closed after the test."""
    async with opened_store(database_url, clock) as opened:
        yield opened


@pytest.fixture
def admin_token() -> str:
    """The admin token of the app under test (``tests.support.auth.ADMIN`` is its header)."""
    return ADMIN_TOKEN


@pytest.fixture
def settings(tmp_path: Path, database_url: str, admin_token: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=SecretStr(admin_token),
        secrets_key=SecretStr(SECRETS_KEY),
        database_wait_s=0,
    )


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[FastAPI]:
    """The service's app with its lifespan running (store, read model, worker)."""
    app = service_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app over ASGI (no socket)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    """Scan everything the run lets out for the secrets it made (tests/support/secrets_scan)."""
    secrets_scan.install(config)
