"""The PostgreSQL pool: it keeps the connections it opened, checks only those that sat idle,
and replaces one the server ended while it was idle, without failing a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bookingcache.store.sql import engine as engines
from tests.support.databases import asyncpg_dsn

pytestmark = pytest.mark.postgres

POOL = 3


@pytest.fixture
def postgres_url(_postgres_url: str | None) -> str:
    """The session's PostgreSQL test database (these tests are marked ``postgres``)."""
    assert _postgres_url is not None
    return _postgres_url


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    made = engines.create_engine(postgres_url, pool_size=POOL)
    try:
        yield made
    finally:
        await made.dispose()


@pytest.fixture
def pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per check of a pooled connection."""
    seen: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        seen.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


async def _backend_pid(engine: AsyncEngine, *, hold_s: float = 0.0) -> int:
    async with engine.connect() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await asyncio.sleep(hold_s)
        return int(pid)


async def test_the_pool_keeps_twice_its_size_open_after_a_burst(
    engine: AsyncEngine, pings: list[int]
) -> None:
    # More at once than the pool's size: each of the 2 x POOL connections is opened once...
    first = await asyncio.gather(*(_backend_pid(engine, hold_s=0.2) for _ in range(2 * POOL)))
    assert len(set(first)) == 2 * POOL
    # ...and kept: the next burst runs on the same server sessions, none of them checked
    # (each was used moments ago).
    again = await asyncio.gather(*(_backend_pid(engine, hold_s=0.2) for _ in range(2 * POOL)))
    assert set(again) == set(first)
    assert pings == []


async def test_a_connection_idle_past_the_bound_is_checked_and_replaced_if_ended(
    engine: AsyncEngine,
    pings: list[int],
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_S", 0.2)
    pid = await _backend_pid(engine)
    # The server ends the session while it sits in the pool (a restart, a failover).
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url), timeout=10)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await admin.close()
    await asyncio.sleep(0.3)
    # The check finds it gone, and the transaction runs on a new connection.
    replaced = await _backend_pid(engine)
    assert replaced != pid
    assert pings == [1]
    # A connection used moments ago is not checked again.
    assert await _backend_pid(engine) == replaced
    assert pings == [1]
    # One idle past the bound is checked, and kept when it answers.
    await asyncio.sleep(0.3)
    assert await _backend_pid(engine) == replaced
    assert pings == [1, 1]
