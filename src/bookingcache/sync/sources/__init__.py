"""Where a refresh reads a calendar window from: one ``EventSource`` per tenant's configured
source (connector, graph or push)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState


class EventSource(Protocol):
    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        """The complete state of the calendar's events overlapping ``[start, end)``.

        ``None`` means the source has nothing to read for this calendar (a push tenant whose
        relay has not pushed a window): the refresh leaves the cache as it is.
        Raises ``UpstreamError`` (``Throttled`` with a retry-after) when the read failed.
        """
        ...

    def forget(self, tenant_id: str, mailbox: str) -> None:
        """Drop what the source keeps of the calendar between reads (a full resync follows)."""
        ...

    def delta_link_of(self, tenant_id: str, mailbox: str) -> str | None:
        """The source's link for continuing from the last read, stored with its events; None
        for a source that always reads the whole window."""
        ...

    async def aclose(self) -> None: ...


def overlaps(event: BasicEvent, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether an event belongs to the window, as the store's replace-window counts it."""
    if event.start == event.end:
        return start <= event.start < end
    return event.start < end and event.end > start
