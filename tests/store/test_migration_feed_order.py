"""Migration 0012 on both engines: on PostgreSQL the change feed's rows get their seq at commit
(a deferred trigger); going back drops the trigger and its function and keeps the rows. On
SQLite both ways change nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bookingcache.store.sql import engine as engines
from bookingcache.store.sql.schema import UTCDateTime
from tests.store.test_engine import ENGINES, _migrate_to, _scratch_database
from tests.support.databases import writing

_CHANGES = sa.table(
    "calendar_changes",
    sa.column("seq", sa.BigInteger()),
    sa.column("tenant_id", sa.String()),
    sa.column("mailbox", sa.String()),
    sa.column("at", UTCDateTime()),
)
_AT = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


async def _append(engine: AsyncEngine, mailbox: str) -> tuple[int, int]:
    """Append a row in a transaction of its own: the seq its INSERT returned, and the seq it
    has once committed."""
    async with writing(engine) as connection:
        returned = await connection.scalar(
            sa.insert(_CHANGES)
            .values(tenant_id="acme", mailbox=mailbox, at=_AT)
            .returning(_CHANGES.c.seq)
        )
    assert returned is not None
    async with engine.connect() as connection:
        committed = await connection.scalar(
            sa.select(_CHANGES.c.seq).where(_CHANGES.c.mailbox == mailbox)
        )
    assert committed is not None
    return returned, committed


async def _trigger_parts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        triggers = await connection.scalar(
            sa.text(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'calendar_changes'::regclass"
                " AND tgname = 'calendar_changes_number_at_commit'"
            )
        )
        functions = await connection.scalar(
            sa.text(
                "SELECT count(*) FROM pg_proc WHERE proname = 'calendar_changes_number_at_commit'"
            )
        )
    return int(triggers or 0), int(functions or 0)


@pytest.mark.parametrize("kind", ENGINES)
async def test_feed_rows_are_numbered_at_commit_and_no_longer_after_downgrading(
    kind: str, tmp_path: Path
) -> None:
    postgres = kind == "postgres"
    async with _scratch_database(kind, tmp_path) as url:
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0011")
            before = await _append(engine, "before@acme.test")
            assert before[0] == before[1]
            await _migrate_to(engine, "0012")
            if postgres:
                assert await _trigger_parts(engine) == (1, 1)
            returned, committed = await _append(engine, "up@acme.test")
            # PostgreSQL: renumbered inside COMMIT, so after the number the INSERT drew.
            assert committed > returned if postgres else committed == returned
            assert returned > before[1]
            await _migrate_to(engine, "0011", down=True)
            if postgres:
                assert await _trigger_parts(engine) == (0, 0)
            returned_down, committed_down = await _append(engine, "down@acme.test")
            assert returned_down == committed_down > committed
            async with engine.connect() as connection:
                kept = (await connection.execute(sa.select(_CHANGES.c.mailbox))).scalars().all()
            assert sorted(kept) == ["before@acme.test", "down@acme.test", "up@acme.test"]
            await _migrate_to(engine, "0012")  # and up again
            if postgres:
                assert await _trigger_parts(engine) == (1, 1)
        finally:
            await engine.dispose()
