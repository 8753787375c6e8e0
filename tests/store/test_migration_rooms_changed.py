"""Migration 0013 on both engines: each tenant's rooms are dated by its newest room (none: NULL);
going back drops the column and keeps tenants and rooms."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from bookingcache.store.sql import engine as engines
from bookingcache.store.sql.schema import UTCDateTime
from tests.store.tenant_rows import insert_tenant
from tests.store.test_engine import ENGINES, _migrate_to, _scratch_database
from tests.support.databases import writing

_ROOMS = sa.table(
    "rooms",
    *(sa.column(name) for name in ("tenant_id", "room_id", "mailbox", "name")),
    sa.column("updated_at", UTCDateTime()),
)
_CHANGED = sa.table("tenants", sa.column("id"), sa.column("rooms_changed_at", UTCDateTime()))


@pytest.mark.parametrize("kind", ENGINES)
async def test_rooms_are_dated_by_their_newest_and_the_date_goes_downgrading(
    kind: str, tmp_path: Path
) -> None:
    at = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    async with _scratch_database(kind, tmp_path) as url:
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0012")
            async with writing(engine) as connection:
                for tenant_id in ("acme", "bolt"):
                    await insert_tenant(connection, tenant_id, event_source="push", at=at)
                for number, hours in ((1, 3), (2, 7), (3, 5)):
                    await connection.execute(
                        sa.insert(_ROOMS),
                        {
                            "tenant_id": "acme",
                            "room_id": f"r{number}",
                            "mailbox": f"r{number}@acme.test",
                            "name": f"Room {number}",
                            "updated_at": at + dt.timedelta(hours=hours),
                        },
                    )
            await _migrate_to(engine, "0013")
            async with engine.connect() as connection:
                rows = await connection.execute(sa.select(_CHANGED).order_by(_CHANGED.c.id))
                dated = {row.id: row.rooms_changed_at for row in rows}
            assert dated == {"acme": at + dt.timedelta(hours=7), "bolt": None}
            await _migrate_to(engine, "0012", down=True)
            async with engine.connect() as connection:
                columns = await connection.run_sync(
                    lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("tenants")}
                )
                kept = (await connection.execute(sa.select(_ROOMS.c.room_id))).scalars().all()
            assert "rooms_changed_at" not in columns
            assert sorted(kept) == ["r1", "r2", "r3"]
            await _migrate_to(engine, "0013")  # and up again
        finally:
            await engine.dispose()
