"""Request counters the control API reports: requests and throttled requests per mailbox and
per app (by client id: every Graph request an app makes, each ``$batch`` member counting and
its envelope not, as Graph's limits count them), the highest concurrency seen, plus named
counters other parts may add (notifications sent, ...) and named peaks (the most requests one
budget held in its window)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Counters:
    def __init__(self) -> None:
        self.requests_per_mailbox: Counter[str] = Counter()
        self.throttled_per_mailbox: Counter[str] = Counter()
        self.max_concurrency_per_mailbox: dict[str, int] = {}
        self.requests_per_app: Counter[str] = Counter()
        self.throttled_per_app: Counter[str] = Counter()
        self.named: Counter[str] = Counter()

    @property
    def throttled(self) -> int:
        return sum(self.throttled_per_mailbox.values())

    def record_request(self, mailbox_id: str) -> None:
        self.requests_per_mailbox[mailbox_id] += 1

    def record_throttled(self, mailbox_id: str, app_id: str | None = None) -> None:
        self.throttled_per_mailbox[mailbox_id] += 1
        if app_id is not None:
            self.throttled_per_app[app_id] += 1

    def record_app_request(self, app_id: str) -> None:
        self.requests_per_app[app_id] += 1

    def record_app_throttled(self, app_id: str) -> None:
        self.throttled_per_app[app_id] += 1

    def record_concurrency(self, mailbox_id: str, in_flight: int) -> None:
        if in_flight > self.max_concurrency_per_mailbox.get(mailbox_id, 0):
            self.max_concurrency_per_mailbox[mailbox_id] = in_flight

    def incr(self, name: str, amount: int = 1) -> None:
        self.named[name] += amount

    def peak(self, name: str, value: int) -> None:
        """Keep the highest ``value`` seen under ``name`` (how close a budget came to its limit)."""
        if value > self.named[name]:
            self.named[name] = value

    def reset(self) -> None:
        self.requests_per_mailbox.clear()
        self.throttled_per_mailbox.clear()
        self.max_concurrency_per_mailbox.clear()
        self.requests_per_app.clear()
        self.throttled_per_app.clear()
        self.named.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_per_mailbox": dict(self.requests_per_mailbox),
            "throttled": self.throttled,
            "throttled_per_mailbox": dict(self.throttled_per_mailbox),
            "max_concurrency_per_mailbox": dict(self.max_concurrency_per_mailbox),
            "requests_per_app": dict(self.requests_per_app),
            "throttled_per_app": dict(self.throttled_per_app),
            **dict(self.named),
        }
