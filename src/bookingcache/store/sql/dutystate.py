"""``SqlDutyState``: the cluster duties' shared state (``store.dutystate``) over
``calendar_silence``, ``tenant_converges`` and the ``cursor`` of the silence duty's lease."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.store.duties import SILENCE, Lease, LeaseLost
from bookingcache.store.dutystate import ConvergeTimes, Key, SilenceRecord
from bookingcache.store.sql.cluster import fence
from bookingcache.store.sql.schema import calendar_silence, duty_leases, tenant_converges, tenants
from bookingcache.store.sql.store import SqlStore


class SqlDutyState:
    def __init__(self, store: SqlStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        if self._store.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # --- silence ---------------------------------------------------------------------------
    async def silence_records(self) -> dict[Key, SilenceRecord]:
        async with self._store.read() as connection:
            rows = await connection.execute(sa.select(calendar_silence))
            return {
                (row.tenant_id, row.mailbox): SilenceRecord(
                    row.tenant_id, row.mailbox, row.baseline, row.unannounced, row.silent_since
                )
                for row in rows
            }

    async def silence_cursor(self) -> int | None:
        async with self._store.read() as connection:
            cursor = await connection.scalar(
                sa.select(duty_leases.c.cursor).where(duty_leases.c.duty == SILENCE)
            )
            return None if cursor is None else int(cursor)

    async def save_silence(
        self, records: Sequence[SilenceRecord], *, cursor: int, lease: Lease | None
    ) -> None:
        now = self._clock.now()
        statement = self._insert(calendar_silence)
        upsert = statement.on_conflict_do_update(
            index_elements=["tenant_id", "mailbox"],
            set_={
                "baseline": statement.excluded.baseline,
                "unannounced": statement.excluded.unannounced,
                "silent_since": statement.excluded.silent_since,
            },
        )

        def work(connection: Connection) -> bool:
            if lease is not None and not fence(connection, lease, now=now):
                return False
            if records:
                known = set(
                    connection.scalars(
                        sa.select(tenants.c.id).where(
                            tenants.c.id.in_({record.tenant_id for record in records})
                        )
                    )
                )
                rows = [
                    {
                        "tenant_id": record.tenant_id,
                        "mailbox": record.mailbox,
                        "baseline": record.baseline,
                        "unannounced": record.unannounced,
                        "silent_since": record.silent_since,
                    }
                    for record in records
                    if record.tenant_id in known
                ]
                if rows:
                    connection.execute(upsert, rows)
            connection.execute(
                self._insert(duty_leases)
                .values(duty=SILENCE, token=0)
                .on_conflict_do_nothing(index_elements=["duty"])
            )
            connection.execute(
                sa.update(duty_leases).where(duty_leases.c.duty == SILENCE).values(cursor=cursor)
            )
            return True

        if not await self._store.transaction(work):
            raise LeaseLost(f"the {SILENCE} duty's lease is no longer held")

    async def clear_silence(self, tenant_id: str, mailbox: str) -> None:
        def work(connection: Connection) -> None:
            connection.execute(
                sa.update(calendar_silence)
                .where(
                    _silence_of(tenant_id, mailbox), calendar_silence.c.silent_since.is_not(None)
                )
                .values(silent_since=None, unannounced=0)
            )

        await self._store.transaction(work)

    async def forget_silence(self, tenant_id: str, mailbox: str) -> None:
        def work(connection: Connection) -> None:
            connection.execute(sa.delete(calendar_silence).where(_silence_of(tenant_id, mailbox)))

        await self._store.transaction(work)

    # --- converge timing -------------------------------------------------------------------
    async def request_converge(
        self,
        tenant_id: str,
        due_at: dt.datetime,
        *,
        restart: bool,
        after_last_s: float | None = None,
    ) -> None:
        def work(connection: Connection) -> None:
            if not connection.scalar(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)):
                return
            query = sa.select(tenant_converges.c.last_at, tenant_converges.c.due_at).where(
                tenant_converges.c.tenant_id == tenant_id
            )
            if connection.dialect.name == "postgresql":
                query = query.with_for_update()
            row = connection.execute(query).first()
            due = due_at
            if after_last_s is not None and row is not None and row.last_at is not None:
                due = max(due, row.last_at + dt.timedelta(seconds=after_last_s))
            if row is None:
                connection.execute(
                    self._insert(tenant_converges)
                    .values(tenant_id=tenant_id, due_at=due)
                    .on_conflict_do_nothing(index_elements=["tenant_id"])
                )
                return
            if not restart and row.due_at is not None and row.due_at <= due:
                return
            connection.execute(
                sa.update(tenant_converges)
                .where(tenant_converges.c.tenant_id == tenant_id)
                .values(due_at=due)
            )

        await self._store.transaction(work)

    async def converge_times(self) -> dict[str, ConvergeTimes]:
        async with self._store.read() as connection:
            rows = await connection.execute(sa.select(tenant_converges))
            return {row.tenant_id: ConvergeTimes(row.last_at, row.due_at) for row in rows}

    async def converged(self, tenant_id: str, at: dt.datetime) -> None:
        statement = self._insert(tenant_converges).values(tenant_id=tenant_id, last_at=at)
        column = tenant_converges.c.due_at
        upsert = statement.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={
                "last_at": at,
                "due_at": sa.case((column <= at, None), else_=column),
            },
        )

        def work(connection: Connection) -> None:
            if connection.scalar(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)):
                connection.execute(upsert)

        await self._store.transaction(work)

    async def forget_converges(self, tenant_id: str) -> None:
        def work(connection: Connection) -> None:
            connection.execute(
                sa.delete(tenant_converges).where(tenant_converges.c.tenant_id == tenant_id)
            )

        await self._store.transaction(work)


def _silence_of(tenant_id: str, mailbox: str) -> sa.ColumnElement[bool]:
    return sa.and_(calendar_silence.c.tenant_id == tenant_id, calendar_silence.c.mailbox == mailbox)
