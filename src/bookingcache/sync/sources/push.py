"""Event source ``push``: the relay pushes the basic events of a window with its notification,
and intake applies them through ``replace_window`` directly. A refresh job therefore has nothing
to read: it answers ``None`` and the worker leaves the cache as it is. The calendar's last
successful sync stays where the last push put it, so availability turns ``unknown`` once the
data is older than the tenant's staleness bound, which is the honest answer when the relay has
gone quiet."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState


class PushSource:
    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        return None

    def forget(self, tenant_id: str, mailbox: str) -> None:
        """Nothing is kept between pushes."""

    def delta_link_of(self, tenant_id: str, mailbox: str) -> str | None:
        return None

    async def aclose(self) -> None:
        return None
