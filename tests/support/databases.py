"""Reaching the test databases directly (the fixtures are in tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bookingcache.clock import FixedClock
from bookingcache.settings import new_secrets_key
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql import engine as engines
from bookingcache.store.sql.store import SqlStore, open_store

POSTGRES_ENV = "BOOKINGCACHE_TEST_DATABASE_URL"

# The key that seals the test databases' secrets, this run's own: the tests' stores, the
# settings of the apps under test and the processes they start all take it.
SECRETS_KEY = new_secrets_key()


def sealing_box() -> SecretBox:
    return SecretBox([SECRETS_KEY])


def asyncpg_dsn(url: str) -> str:
    """A database URL as asyncpg's own ``connect`` takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def opened_store(
    database_url: str, clock: FixedClock | None = None
) -> AsyncIterator[SqlStore]:
    """A ``SqlStore`` on the migrated database at ``database_url``, closed on the way out
    (on the system clock unless given one)."""
    opened = await open_store(database_url, box=sealing_box(), migrate=False, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of ``engine`` that may write, in a transaction committed on the way out
    (for what a test writes around the store: rows of an older schema, a migration)."""
    async with engine.connect() as connection:
        connection = await connection.execution_options(**{engines.WRITE_OPTION: True})
        async with connection.begin():
            yield connection
