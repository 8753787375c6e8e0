"""A faithful in-memory ``EventSource``: a calendar per mailbox, optional delays and failures,
and a record of how many reads ran at once (per tenant and in total)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, deque
from collections.abc import Sequence

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState
from bookingcache.sync.sources import overlaps


class MemorySource:
    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.calendars: dict[str, dict[str, BasicEvent]] = {}
        self.delay_s = delay_s
        self.failures: dict[str, deque[Exception]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.reads: Counter[str] = Counter()
        self.read_times: dict[str, list[float]] = {}
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.max_total = 0
        self.forgotten: list[str] = []

    def put(self, mailbox: str, event: BasicEvent) -> None:
        self.calendars.setdefault(mailbox, {})[event.id] = event

    def remove(self, mailbox: str, event_id: str) -> None:
        self.calendars.get(mailbox, {}).pop(event_id, None)

    def fail(self, mailbox: str, *errors: Exception) -> None:
        self.failures.setdefault(mailbox, deque()).extend(errors)

    def forget(self, tenant_id: str, mailbox: str) -> None:
        self.forgotten.append(mailbox)

    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        mailbox = calendar.mailbox
        self.reads[mailbox] += 1
        self.read_times.setdefault(mailbox, []).append(asyncio.get_running_loop().time())
        self.active[calendar.tenant_id] += 1
        self.max_active[calendar.tenant_id] = max(
            self.max_active[calendar.tenant_id], self.active[calendar.tenant_id]
        )
        self.max_total = max(self.max_total, sum(self.active.values()))
        try:
            gate = self.gates.get(mailbox)
            if gate is not None:
                await gate.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            pending = self.failures.get(mailbox)
            if pending:
                raise pending.popleft()
            # Read the state at the end of the call, as a real source would.
            return [
                event
                for event in self.calendars.get(mailbox, {}).values()
                if overlaps(event, start, end)
            ]
        finally:
            self.active[calendar.tenant_id] -= 1

    async def aclose(self) -> None:
        return None
