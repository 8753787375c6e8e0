"""Migration 0010 on both engines: each tenant gets its way in (push tenants the relay, every
other one direct) and empty graph access; going back drops them and keeps the tenants."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from bookingcache.store.sql import engine as engines
from tests.store.tenant_rows import TENANTS_0009, insert_tenant
from tests.store.test_engine import ENGINES, _migrate_to, _scratch_database
from tests.support.databases import writing

_GRAPH = ("graph_directory_tenant", "graph_client_id", "graph_client_secret", "graph_revision")


@pytest.mark.parametrize("kind", ENGINES)
async def test_tenants_get_their_way_in_and_lose_it_again_downgrading(
    kind: str, tmp_path: Path
) -> None:
    at = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    async with _scratch_database(kind, tmp_path) as url:
        engine = engines.create_engine(url)
        try:
            await _migrate_to(engine, "0009")
            async with writing(engine) as connection:
                for tenant_id, source in (("acme", "push"), ("bolt", "connector")):
                    await insert_tenant(connection, tenant_id, event_source=source, at=at)
            await _migrate_to(engine, "0010")
            async with engine.connect() as connection:
                query = "SELECT id, notification_mode, graph_directory_tenant, graph_revision "
                rows = (await connection.execute(sa.text(query + "FROM tenants ORDER BY id"))).all()
            assert [tuple(row) for row in rows] == [
                ("acme", "relay", None, 0),
                ("bolt", "direct", None, 0),
            ]
            await _migrate_to(engine, "0009", down=True)
            async with engine.connect() as connection:
                columns = await connection.run_sync(
                    lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("tenants")}
                )
                kept = (await connection.execute(sa.select(TENANTS_0009.c.id))).scalars().all()
            assert "notification_mode" not in columns
            assert not columns & set(_GRAPH)
            assert sorted(kept) == ["acme", "bolt"]
            await _migrate_to(engine, "0010")  # and up again
        finally:
            await engine.dispose()
