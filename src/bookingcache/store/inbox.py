"""The inbox port: where intake makes accepted notifications durable.

``store.sql.inbox.SqlInbox`` fills it. One call is one transaction: the notifications are
recorded and every calendar they name gets its pending refresh job (``store.jobs``), so a
notification is processed exactly when its calendar's job is done.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from bookingcache.domain.notifications import InboxItem


class Inbox(Protocol):
    async def append(
        self, items: Sequence[InboxItem], *, received_at: dt.datetime | None = None
    ) -> int:
        """Store the items and enqueue their calendars' refreshes, all in ONE transaction: when
        this returns, every item is durable. ``received_at`` is when the newest of them
        arrived (default: now). Returns how many calendars got a refresh to do."""
        ...

    async def prune(
        self, received_before: dt.datetime, *, chunk: int = 1000, max_chunks: int = 20
    ) -> int:
        """Drop the record of notifications received before ``received_before`` (what they
        asked for was done by their calendars' jobs); returns how many rows went."""
        ...

    async def notifications(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Every stored notification (of one tenant) as its inbox entry, oldest first, each
        with its ``tenant`` and ``source`` (docs/storage.md lists the entries' fields)."""
        ...
