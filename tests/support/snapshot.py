"""The whole database as rows, to show that a refused call changed nothing."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from bookingcache.store.sql.schema import metadata
from bookingcache.store.sql.store import SqlStore

Snapshot = dict[str, list[tuple[Any, ...]]]


async def snapshot(store: SqlStore, *, leave_out: Collection[str] = ()) -> Snapshot:
    """Every row of every table of the schema (but those in ``leave_out``), in a stable order."""
    tables: Snapshot = {}
    async with store.read() as connection:
        for table in metadata.sorted_tables:
            if table.name in leave_out:
                continue
            rows = (await connection.execute(sa.select(table))).all()
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return tables
