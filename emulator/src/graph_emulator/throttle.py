"""Graph's request limits: Outlook's per app id + mailbox (at most 4 concurrent requests and
10,000 requests per 10 minutes) and the global one per app (130,000 requests per 10 seconds);
beyond either, ``429 Too Many Requests`` with ``Retry-After``."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from graph_emulator.clock import Clock
from graph_emulator.config import EmulatorConfig
from graph_emulator.counters import Counters
from graph_emulator.errors import GraphError


def throttled(message: str, retry_after_s: int) -> GraphError:
    return GraphError(
        429,
        "ApplicationThrottled",
        message,
        headers={"Retry-After": str(max(1, retry_after_s))},
    )


class Throttle:
    def __init__(self, *, config: EmulatorConfig, clock: Clock, counters: Counters) -> None:
        self._config = config
        self._clock = clock
        self._counters = counters
        self._in_flight: dict[tuple[str, str], int] = defaultdict(int)
        self._mailbox_in_flight: dict[str, int] = defaultdict(int)
        self._recent: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._app_recent: dict[str, deque[float]] = defaultdict(deque)

    def admit_app(self, app_id: str) -> None:
        """Count one Graph request (a ``$batch`` member counts, its envelope not) against the
        app's global budget; throttled requests count too."""
        config = self._config
        now = self._clock.monotonic()
        recent = self._app_recent[app_id]
        while recent and recent[0] <= now - config.app_request_window_s:
            recent.popleft()
        recent.append(now)
        self._counters.record_app_request(app_id)
        self._counters.peak("app_requests_peak", len(recent))
        if len(recent) > config.app_request_limit:
            self._counters.incr("app_throttled")
            self._counters.record_app_throttled(app_id)
            wait = recent[-config.app_request_limit] + config.app_request_window_s - now
            raise GraphError(
                429,
                "TooManyRequests",
                "The application has made too many requests. Retry after the delay given in "
                "the Retry-After header.",
                headers={"Retry-After": str(math.ceil(max(wait, 1.0)))},
            )

    def in_flight(self, mailbox_id: str) -> int:
        return self._mailbox_in_flight.get(mailbox_id, 0)

    @asynccontextmanager
    async def admit(self, app_id: str, mailbox_id: str) -> AsyncIterator[None]:
        """Hold one of the app's concurrent slots on the mailbox for the request's duration."""
        config = self._config
        key = (app_id, mailbox_id)
        self._counters.record_request(mailbox_id)
        now = self._clock.monotonic()
        recent = self._recent[key]
        while recent and recent[0] <= now - config.mailbox_request_window_s:
            recent.popleft()
        # Throttled requests still count against the window, as Graph documents.
        recent.append(now)
        self._counters.peak("mailbox_requests_peak", len(recent))
        if len(recent) > config.mailbox_request_limit:
            self._counters.record_throttled(mailbox_id, app_id)
            wait = recent[-config.mailbox_request_limit] + config.mailbox_request_window_s - now
            raise throttled(
                "Application is over its MailboxRequests limit.", math.ceil(max(wait, 1.0))
            )
        if self._in_flight[key] >= config.mailbox_concurrency_limit:
            self._counters.record_throttled(mailbox_id, app_id)
            raise throttled(
                "Application is over its MailboxConcurrency limit.",
                config.throttle_retry_after_s,
            )
        self._in_flight[key] += 1
        self._mailbox_in_flight[mailbox_id] += 1
        self._counters.record_concurrency(mailbox_id, self._mailbox_in_flight[mailbox_id])
        try:
            if config.mailbox_latency_s > 0:
                await self._clock.sleep(config.mailbox_latency_s)
            yield
        finally:
            self._in_flight[key] -= 1
            self._mailbox_in_flight[mailbox_id] -= 1
