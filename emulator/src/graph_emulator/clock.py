"""The emulator's clock. Real time by default; a virtual clock lets tests move time (subscription
expiry, token expiry, the 4-hour retry window) without waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import time


class Clock:
    """Wall-clock UTC time, with an optional virtual offset tests can advance.

    ``advance`` moves the clock forward and wakes every ``sleep`` whose deadline has passed, so
    background loops (delivery retries, expiry sweeps) react at once.
    """

    def __init__(self, *, virtual: bool = False, start: dt.datetime | None = None) -> None:
        self.virtual = virtual
        self._offset = dt.timedelta(0)
        if start is not None:
            self._offset = start.astimezone(dt.UTC) - dt.datetime.now(dt.UTC)
        self._changed: asyncio.Event | None = None

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._offset.total_seconds()

    def advance(self, delta: dt.timedelta) -> None:
        if not self.virtual:
            raise RuntimeError("only a virtual clock can be advanced")
        self._offset += delta
        if self._changed is not None:
            self._changed.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of clock time (cut short when a virtual clock jumps past it)."""
        deadline = self.monotonic() + max(seconds, 0.0)
        while True:
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            # asyncio.wait, unlike wait_for on Python 3.11, never swallows a cancellation that
            # races with the event being set, so tasks sleeping here always stop when cancelled.
            waiter = asyncio.ensure_future(changed.wait())
            try:
                done, _ = await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiter.cancel()
            if not done:
                continue
            changed.clear()
