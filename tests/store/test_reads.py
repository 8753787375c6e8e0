"""``SqlStore.read()`` on PostgreSQL runs its statements without a transaction (no ``BEGIN``, no
``ROLLBACK``: one round trip per statement), and hands its connection back to the pool as it got
it, so that the next ``transaction()`` on the same server session is still one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.store.sql.store import SqlStore, open_store
from tests.support.databases import sealing_box

pytestmark = pytest.mark.postgres


@pytest.fixture
async def one_connection(_postgres_url: str | None) -> AsyncIterator[SqlStore]:
    """The session's PostgreSQL test database on a store of the smallest pool: reads and
    writes made one after another run on the one server session it opened."""
    assert _postgres_url is not None
    store = await open_store(_postgres_url, box=sealing_box(), migrate=False, pool_size=1)
    try:
        yield store
    finally:
        await store.close()


async def _session(store: SqlStore) -> tuple[int, bool]:
    """The server session a read ran on, and whether that read was inside a transaction."""
    async with store.read() as connection:
        pid = (await connection.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        raw = await connection.get_raw_connection()
        return int(pid), bool(raw.driver_connection.is_in_transaction())


async def test_a_read_runs_without_a_transaction(one_connection: SqlStore) -> None:
    _, in_transaction = await _session(one_connection)
    assert not in_transaction


async def test_a_write_after_a_read_on_the_same_session_is_still_one_transaction(
    one_connection: SqlStore,
) -> None:
    before, _ = await _session(one_connection)

    def two_statements(connection: Connection) -> tuple[int, int, int]:
        pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        first = connection.execute(sa.text("SELECT txid_current()")).scalar_one()
        second = connection.execute(sa.text("SELECT txid_current()")).scalar_one()
        return int(pid), int(first), int(second)

    pid, first, second = await one_connection.transaction(two_statements)
    assert pid == before  # the server session the read had
    assert first == second  # one transaction: the read's autocommit did not stay on it
    after, in_transaction = await _session(one_connection)
    assert after == before
    assert not in_transaction
