"""A sliding-window limiter on the injected clock, for Graph's subscription API quotas
(writes 500 per 20 s per app and tenant; listing 25 per 20 s).

Graph counts a request when it arrives, which is some time after it was sent and before it was
answered. So a request holds its place in the window from its sending until ``period_s`` after
its answer: however long it travels, no ``period_s`` of arrivals holds more than ``capacity``.
Every attempt takes a place, a retry after a 429 included, since Graph counts that one too."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from .clock import Clock

# While every place is held by a request still in flight, how often to look again.
_IN_FLIGHT_POLL_S = 0.05


class SlidingWindow:
    def __init__(self, capacity: int, period_s: float, clock: Clock) -> None:
        self._capacity = capacity
        self._period = timedelta(seconds=period_s)
        self._clock = clock
        self._answered: deque[datetime] = deque()  # when each request was answered, in order
        self._in_flight = 0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A place for one request, sent inside the block and answered (or failed) by its
        end."""
        await self._acquire()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._answered.append(self._clock.now())

    async def _acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.now()
                while self._answered and now - self._answered[0] >= self._period:
                    self._answered.popleft()
                if len(self._answered) + self._in_flight < self._capacity:
                    self._in_flight += 1
                    return
                if self._answered:
                    wait = (self._answered[0] + self._period - now).total_seconds()
                else:
                    wait = _IN_FLIGHT_POLL_S
                await self._clock.sleep(max(wait, 0.001))
