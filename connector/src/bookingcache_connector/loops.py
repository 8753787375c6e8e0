"""The connector's background loops and what ``/healthz`` says of them.

A loop (the relay's forwarding, the periodic renewal, the reconciliation of pushed events) keeps
a :class:`LoopStatus`: whether its task runs, how many times in a row it failed, and the kind,
text and time of its last error. A loop never lets an exception end it: it records the failure,
logs it once with its cause, waits a backoff that doubles per consecutive failure (with jitter),
and goes on. :class:`Loops` holds them all and judges the connector's health from them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import to_graph_utc
from .errors import AuthError, ConnectorError, DeliveryError, GraphError
from .redact import redact_urls

log = logging.getLogger(__name__)

# A loop is "failing" once it failed this many times in a row: one lost call is not an outage.
FAILING_AFTER = 3
MAX_DETAIL = 300


def error_kind(exc: BaseException) -> str:
    """A short, stable name for a failure (no secrets, no free text): a metric label and the
    ``kind`` in ``/healthz``."""
    if isinstance(exc, AuthError):
        return "token"
    if isinstance(exc, GraphError):
        return "graph"
    if isinstance(exc, DeliveryError):
        return "delivery"
    if isinstance(exc, ConnectorError):
        return "connector"
    return "unexpected"


def describe(exc: BaseException) -> str:
    """The error and its cause in one line, URLs stripped of credentials, bounded."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not isinstance(exc, GraphError | DeliveryError):
        text += f" (caused by {type(cause).__name__}: {cause})"
    text = redact_urls(" ".join(text.split()))
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def backoff_s(failures: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``base_s * 2**(failures-1)`` capped at ``cap_s``, then
    a random half to all of it (so connectors that failed together do not retry together)."""
    delay = min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 30))
    return delay * (0.5 + rng.random() / 2)


@dataclass
class LoopStatus:
    name: str
    started: bool = False
    running: bool = False
    failures: int = 0  # consecutive
    last_error_kind: str | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None
    total_failures: int = 0

    @property
    def failing(self) -> bool:
        return self.failures >= FAILING_AFTER

    @property
    def dead(self) -> bool:
        """Started by its host and no longer running."""
        return self.started and not self.running

    def start(self) -> None:
        self.started = self.running = True

    def stop(self) -> None:
        self.running = False

    def succeeded(self, at: datetime) -> None:
        if self.failures:
            log.info("%s loop recovered after %d failure(s)", self.name, self.failures)
        self.failures = 0
        self.last_success_at = at

    def failed(self, exc: BaseException, at: datetime, *, retry_in_s: float | None = None) -> None:
        """Record a failure and log it, once: a line with its cause, and the traceback too the
        first time in a row an unexpected exception (not a ``ConnectorError``) ends an
        iteration."""
        self.failures += 1
        self.total_failures += 1
        self.last_error_kind = error_kind(exc)
        self.last_error = describe(exc)
        self.last_error_at = at
        retry = f"; retrying in {retry_in_s:.1f} s" if retry_in_s is not None else ""
        unexpected = not isinstance(exc, ConnectorError)
        log.warning(
            "%s loop failed (%d in a row)%s: %s",
            self.name,
            self.failures,
            retry,
            self.last_error,
            exc_info=exc if unexpected and self.failures == 1 else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "failing": self.failing,
            "consecutiveFailures": self.failures,
            "lastError": None
            if self.last_error_at is None
            else {
                "kind": self.last_error_kind,
                "detail": self.last_error,
                "at": to_graph_utc(self.last_error_at),
            },
            "lastSuccessAt": to_graph_utc(self.last_success_at) if self.last_success_at else None,
        }


@dataclass
class Loops:
    """Every loop of one connector, by name."""

    statuses: dict[str, LoopStatus] = field(default_factory=dict)

    def get(self, name: str) -> LoopStatus:
        if name not in self.statuses:
            self.statuses[name] = LoopStatus(name)
        return self.statuses[name]

    def unhealthy(self) -> dict[str, str]:
        """The loops that make the connector unhealthy, and why."""
        bad: dict[str, str] = {}
        for name, status in self.statuses.items():
            if status.dead:
                bad[name] = "not running"
            elif status.failing:
                bad[name] = f"failing ({status.failures} failures in a row)"
        return bad
