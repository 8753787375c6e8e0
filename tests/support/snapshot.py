"""The whole database as rows, to show that a refused call changed nothing."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from bookingcache.store.sql.schema import metadata
from bookingcache.store.sql.store import SqlStore

Snapshot = dict[str, list[tuple[Any, ...]]]

# What a running service process writes by itself, with time and not with any call: its
# heartbeat (its row appears once the process has joined the cluster) and its duties' leases.
BY_ITSELF = frozenset({"process_heartbeats", "duty_leases"})


async def snapshot(store: SqlStore, *, leave_out: Collection[str] = ()) -> Snapshot:
    """Every row of every table of the schema (but those in ``leave_out``, and those the
    service writes by itself), in a stable order."""
    tables: Snapshot = {}
    async with store.read() as connection:
        for table in metadata.sorted_tables:
            if table.name in leave_out or table.name in BY_ITSELF:
                continue
            rows = (await connection.execute(sa.select(table))).all()
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return tables
