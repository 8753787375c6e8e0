"""How PostgreSQL runs a claim on a queue table in the shape autovacuum leaves it: a few live
jobs among thousands of dead rows. The claim's "is this calendar's refresh running?" check
reads the claimed rows' index (migration 0014), not the whole table once per candidate, and
the service's sessions never compile a statement (``jit = off``)."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from bookingcache.domain.tenancy import Tenant
from bookingcache.store.sql import claims
from bookingcache.store.sql.store import SqlStore
from tests.support.databases import asyncpg_dsn

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]

NOW = dt.datetime(2026, 12, 7, 15, 0, tzinfo=dt.UTC)

# One job after another through a calendar, as a busy worker leaves them: created pending,
# claimed, deleted when done; two dead row versions each.
_CHURN = """
DO $$
BEGIN
  FOR round IN 1..2000 LOOP
    INSERT INTO jobs (tenant_id, mailbox, kind, due_at, created_at)
      VALUES ('acme', 'a@acme.test', 'refresh', now(), now());
    UPDATE jobs SET locked_by = 'w@1/x', locked_until = now() + interval '1 minute'
      WHERE mailbox = 'a@acme.test';
    DELETE FROM jobs WHERE mailbox = 'a@acme.test';
  END LOOP;
END $$
"""


async def test_the_live_claim_check_reads_the_claimed_rows_index(
    tenant: Tenant, database_url: str
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        # A pending job of one calendar, a running claim of another, then the churn; the
        # statistics are those of the calm moment before it, as autovacuum's last visit left.
        await connection.execute(
            "INSERT INTO jobs (tenant_id, mailbox, kind, due_at, created_at, locked_by,"
            " locked_until) VALUES"
            " ('acme', 'b@acme.test', 'refresh', $1, $1, NULL, NULL),"
            " ('acme', 'c@acme.test', 'refresh', $1, $1, 'w@1/y', $2)",
            NOW - dt.timedelta(seconds=5),
            NOW + dt.timedelta(seconds=60),
        )
        await connection.execute("ANALYZE jobs")
        await connection.execute(_CHURN)

        candidates = claims._candidates(postgres=True, excluding=False)
        compiled = candidates.compile(dialect=asyncpg_dialect.dialect())
        values = {"now": NOW, "fetch": 64}
        args = [values[name] for name in compiled.positiontup or ()]
        plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {compiled}", *args))
    finally:
        await connection.close()

    assert "ix_jobs_claimed" in plan, plan
    assert "Seq Scan on jobs running" not in plan, plan


async def test_the_service_s_sessions_do_not_compile_statements(store: SqlStore) -> None:
    async with store.read() as connection:
        assert await connection.scalar(sa.text("SHOW jit")) == "off"
