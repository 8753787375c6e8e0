"""``SqlInbox``: the inbox port over ``inbox_batches``, writing each notified calendar's pending
job (``SqlJobQueue``) in the same transaction.

Intake stores what it accepted as one inbox row per commit round and tenant and source (the
record), and in the same transaction makes every calendar it names dirty through that
calendar's job (the work): whether a notification was processed is whether its job is done.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.store.sql import subscriptions
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.rows import as_utc
from bookingcache.store.sql.schema import inbox_batches
from bookingcache.store.sql.store import SqlStore

log = logging.getLogger(__name__)

_MAX_KEY = 320
# A round of at most this many notifications is stored as a brief transaction (SQLite may run
# it on the event loop's thread: ``SqlBase.transaction``); a larger one goes to the writer
# thread, so that it does not hold up the loop.
BRIEF_ROUND_ITEMS = 256
_INSERT_BATCH = inbox_batches.insert()


class SqlInbox:
    def __init__(self, store: SqlStore, *, jobs: SqlJobQueue, clock: Clock) -> None:
        self._store = store
        self._jobs = jobs
        self._clock = clock

    async def append(
        self, items: Sequence[InboxItem], *, received_at: dt.datetime | None = None
    ) -> int:
        if not items:
            return 0
        now = self._clock.now()
        received = now if received_at is None else min(received_at, now)

        def work(connection: Connection) -> int:
            stored = items
            lifecycle = any(_needs_lifecycle(item) for item in stored)
            if lifecycle:
                stored = subscriptions.resolve_mailboxes(connection, stored)
            enqueued = self._append_rows(connection, stored, received, now)
            if lifecycle:
                # Marked at the time they are stored, not when they arrived: a converge that
                # started in between could not see them, and must not clear them.
                subscriptions.mark_lifecycle(connection, stored, now=now)
            return enqueued

        enqueued = await self._store.transaction(work, brief=len(items) <= BRIEF_ROUND_ITEMS)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("inbox: %d notifications, %d calendars to refresh", len(items), enqueued)
        if enqueued:
            self._jobs.committed(max(now, received + dt.timedelta(seconds=self._jobs.coalesce_s)))
        return enqueued

    def _append_rows(
        self,
        connection: Connection,
        items: Sequence[InboxItem],
        received: dt.datetime,
        now: dt.datetime,
    ) -> int:
        wanted, changed, batches = _sort(items)
        connection.execute(
            _INSERT_BATCH,
            [
                {
                    "tenant_id": tenant,
                    "received_at": received,
                    "source": source,
                    "count": len(entries),
                    "notifications": entries,
                }
                for (tenant, source), entries in batches.items()
            ],
        )
        if not wanted:
            return 0
        return self._jobs.make_pending(
            connection,
            wanted,
            due=received + dt.timedelta(seconds=self._jobs.coalesce_s),
            now=now,
            notified=received,
            changed=changed,
        )

    async def prune(
        self, received_before: dt.datetime, *, chunk: int = 1000, max_chunks: int = 20
    ) -> int:
        """Rows are read in id order, which is arrival order, and a pass stops at the first
        younger row, so it never scans the inbox for old rows that are not there."""

        def work(connection: Connection) -> int:
            rows = connection.execute(
                sa.select(inbox_batches.c.id, inbox_batches.c.received_at)
                .order_by(inbox_batches.c.id)
                .limit(chunk)
            )
            old: list[int] = []
            for row in rows:
                if as_utc(row.received_at) >= received_before:
                    break
                old.append(row.id)
            if old:
                connection.execute(sa.delete(inbox_batches).where(inbox_batches.c.id.in_(old)))
            return len(old)

        return await self._store.in_chunks(work, chunk=chunk, max_chunks=max_chunks)

    async def notifications(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(
            inbox_batches.c.tenant_id, inbox_batches.c.source, inbox_batches.c.notifications
        ).order_by(inbox_batches.c.id)
        if tenant_id is not None:
            query = query.where(inbox_batches.c.tenant_id == tenant_id)
        async with self._store.read() as connection:
            rows = await connection.execute(query)
            return [
                {"tenant": row.tenant_id, "source": row.source, **entry}
                for row in rows
                for entry in row.notifications
            ]


def _needs_lifecycle(item: InboxItem) -> bool:
    """Whether storing ``item`` involves the subscriptions table (a mailbox to look up or a
    subscription to mark for the orchestration)."""
    return (item.mailbox is None and bool(item.subscription_id)) or item.kind in (
        NotificationKind.SUBSCRIPTION_REMOVED,
        NotificationKind.REAUTHORIZATION_REQUIRED,
    )


# The kinds' properties as plain lookups: this runs for every notification of a round.
_CHANGE = NotificationKind.CHANGE
_REFRESHING = frozenset(kind for kind in NotificationKind if kind.needs_refresh)
_FULL_RESYNC_KINDS = frozenset(kind for kind in NotificationKind if kind.needs_full_resync)
_KIND_TEXT = {kind: kind.value for kind in NotificationKind}


def _entry(item: InboxItem) -> dict[str, Any]:
    """An accepted notification as its inbox batch lists it (docs/storage.md)."""
    entry: dict[str, Any] = {"kind": _KIND_TEXT[item.kind]}
    if item.subscription_id is not None:
        entry["subscriptionId"] = item.subscription_id
    if item.mailbox:
        entry["mailbox"] = item.mailbox[:_MAX_KEY]
    if item.change_type is not None:
        entry["changeType"] = item.change_type
    if item.payload:
        entry.update(item.payload)
    return entry


def _sort(
    items: Sequence[InboxItem],
) -> tuple[
    dict[tuple[str, str], bool],
    set[tuple[str, str]],
    dict[tuple[str, str], list[dict[str, Any]]],
]:
    """One pass over a round's items: the calendars they ask to refresh (each with whether a
    full resync is asked), those named by change notifications, and the inbox entries by
    (tenant, source), one inbox row each."""
    wanted: dict[tuple[str, str], bool] = {}
    changed: set[tuple[str, str]] = set()
    batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in items:
        kind = item.kind
        if item.mailbox and kind in _REFRESHING:
            key = (item.tenant_id, item.mailbox)
            if kind is _CHANGE:
                changed.add(key)
                wanted.setdefault(key, False)
            else:
                wanted[key] = wanted.get(key, False) or kind in _FULL_RESYNC_KINDS
        source = (item.tenant_id, item.via)
        entries = batches.get(source)
        if entries is None:
            entries = batches[source] = []
        entries.append(_entry(item))
    return wanted, changed, batches
