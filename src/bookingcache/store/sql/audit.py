"""``SqlAuditLog``: the audit log port over the ``audit_log`` table."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.store.audit import AuditEntry, AuditRecord
from bookingcache.store.sql.schema import MAILBOX, audit_log
from bookingcache.store.sql.store import SqlStore

MAX_LIMIT = 1000


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


class SqlAuditLog:
    def __init__(self, store: SqlStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(self, record: AuditRecord) -> AuditEntry:
        at = self._clock.now()
        values = {
            "at": at,
            "actor": _clip(record.actor, 64),
            "client": _clip(record.client, 64),
            "action": _clip(record.action, 64),
            "tenant_id": _clip(record.tenant_id, 200),
            "target": _clip(record.target, MAILBOX),
            "details": dict(record.details),
        }

        def work(conn: Connection) -> int:
            return int(
                conn.execute(
                    sa.insert(audit_log).values(**values).returning(audit_log.c.id)
                ).scalar_one()
            )

        entry_id = await self._store.transaction(work)
        return AuditEntry(id=entry_id, at=at, record=record)

    async def entries(
        self, *, tenant_id: str | None = None, before: int | None = None, limit: int = 100
    ) -> Sequence[AuditEntry]:
        query = sa.select(audit_log).order_by(audit_log.c.id.desc())
        query = query.limit(max(1, min(limit, MAX_LIMIT)))
        if tenant_id is not None:
            query = query.where(audit_log.c.tenant_id == tenant_id)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        async with self._store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEntry(
                id=row.id,
                at=row.at,
                record=AuditRecord(
                    actor=row.actor,
                    action=row.action,
                    client=row.client,
                    tenant_id=row.tenant_id,
                    target=row.target,
                    details=dict(row.details or {}),
                ),
            )
            for row in rows
        ]
