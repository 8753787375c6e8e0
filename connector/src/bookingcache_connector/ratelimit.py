"""A sliding-window limiter on the injected clock, for Graph's subscription API quotas
(writes 500 per 20 s per app and tenant; listing 25 per 20 s)."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timedelta

from .clock import Clock


class SlidingWindow:
    def __init__(self, capacity: int, period_s: float, clock: Clock) -> None:
        self._capacity = capacity
        self._period = timedelta(seconds=period_s)
        self._clock = clock
        self._stamps: deque[datetime] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.now()
                while self._stamps and now - self._stamps[0] >= self._period:
                    self._stamps.popleft()
                if len(self._stamps) < self._capacity:
                    self._stamps.append(now)
                    return
                wait = (self._stamps[0] + self._period - now).total_seconds()
                await self._clock.sleep(max(wait, 0.001))
