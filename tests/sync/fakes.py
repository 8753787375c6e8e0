"""A faithful in-memory ``EventSource``: a calendar per mailbox, gates that hold reads, failures,
and a record of how many reads ran at once (per tenant and in total). Tests wait on what it
did (``wait_until``), never on time."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, deque
from collections.abc import Callable, Sequence

from bookingcache.clock import Clock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState
from bookingcache.sync.sources import overlaps


class MemorySource:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.calendars: dict[str, dict[str, BasicEvent]] = {}
        self.failures: dict[str, deque[Exception]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.reads: Counter[str] = Counter()
        self.read_times: dict[str, list[dt.datetime]] = {}
        self._changed = asyncio.Condition()
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

    def delta_link_of(self, tenant_id: str, mailbox: str) -> str | None:
        return None

    async def wait_until(self, condition: Callable[[], bool], *, timeout_s: float = 10) -> None:
        """Return once ``condition()`` holds; it is checked whenever a read starts or ends."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(condition)

    async def started(self, mailbox: str, reads: int) -> None:
        """Wait until ``reads`` reads of ``mailbox`` have started."""
        await self.wait_until(lambda: self.reads[mailbox] >= reads)

    async def _tell(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        mailbox = calendar.mailbox
        self.reads[mailbox] += 1
        self.read_times.setdefault(mailbox, []).append(self._clock.now())
        self.active[calendar.tenant_id] += 1
        self.max_active[calendar.tenant_id] = max(
            self.max_active[calendar.tenant_id], self.active[calendar.tenant_id]
        )
        self.max_total = max(self.max_total, sum(self.active.values()))
        await self._tell()
        try:
            gate = self.gates.get(mailbox)
            if gate is not None:
                await gate.wait()
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
            await asyncio.shield(self._tell())

    async def aclose(self) -> None:
        return None
