"""``SqlReplayGuard``: the replay-guard port over ``relay_messages``. A ``webhook-id`` accepted
by any service process on the database is refused by every other one while its timestamp is
inside the signature window (the in-process ``ReplayCache`` answers first, this catches the
rest).

An id is claimed before the call is applied and released if the call is then not accepted, so
the sender may retry it unchanged. Rows whose timestamp has left the window are pruned at most
once a minute, in the transaction of a claim.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.store.sql.schema import relay_messages
from bookingcache.store.sql.store import SqlStore

_PRUNE_EVERY = dt.timedelta(minutes=1)


class SqlReplayGuard:
    def __init__(self, store: SqlStore, *, clock: Clock, window: dt.timedelta) -> None:
        self._store = store
        self._clock = clock
        self._window = window
        self._pruned_at: dt.datetime | None = None

    def _insert(self) -> Any:
        dialect = postgresql if self._store.dialect == "postgresql" else sqlite
        return dialect.insert(relay_messages)

    async def claim(self, tenant_id: str, message_id: str, *, sent_at: dt.datetime) -> bool:
        now = self._clock.now()
        cutoff = now - self._window
        statement = (
            self._insert()
            .values(tenant_id=tenant_id, message_id=message_id, sent_at=sent_at)
            # An old row of the same id outside the window no longer counts.
            .on_conflict_do_update(
                index_elements=["tenant_id", "message_id"],
                set_={"sent_at": sent_at},
                where=relay_messages.c.sent_at < cutoff,
            )
        )
        prune = self._pruned_at is None or now - self._pruned_at >= _PRUNE_EVERY
        if prune:
            self._pruned_at = now

        def work(connection: Connection) -> bool:
            claimed = connection.execute(statement).rowcount == 1
            if prune:
                connection.execute(
                    sa.delete(relay_messages).where(relay_messages.c.sent_at < cutoff)
                )
            return claimed

        return await self._store.transaction(work)

    async def release(self, tenant_id: str, message_id: str) -> None:
        await self._store.transaction(
            lambda connection: connection.execute(
                sa.delete(relay_messages).where(
                    relay_messages.c.tenant_id == tenant_id,
                    relay_messages.c.message_id == message_id,
                )
            )
        )
