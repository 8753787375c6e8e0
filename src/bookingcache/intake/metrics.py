"""Prometheus metrics of the intake, registered in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from bookingcache import errors
from bookingcache.intake.relay import InvalidRelayCall
from bookingcache.telemetry.metricsets import MetricSet

_ROUND_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class IntakeMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "bookingcache_intake_accepted_notifications",
            "Notifications committed to the inbox, by endpoint (alt1, alt2)",
            ["via"],
            registry=registry,
        )
        self.ignored = Counter(
            "bookingcache_intake_ignored_notifications",
            "Graph notifications acknowledged but ignored, by reason",
            ["reason"],
            registry=registry,
        )
        self.rejected = Counter(
            "bookingcache_intake_rejected_requests",
            "Intake requests refused, by endpoint and reason",
            ["via", "reason"],
            registry=registry,
        )
        self.pushed_windows = Counter(
            "bookingcache_intake_pushed_windows",
            "Calendar windows pushed by relays and applied",
            registry=registry,
        )
        self.commit_failures = Counter(
            "bookingcache_intake_commit_failures",
            "Intake requests answered 503 because the inbox commit failed",
            registry=registry,
        )
        self.round_requests = Histogram(
            "bookingcache_intake_group_commit_requests",
            "Requests sharing one inbox transaction",
            buckets=_ROUND_SIZES,
            registry=registry,
        )
        self.round_items = Histogram(
            "bookingcache_intake_group_commit_notifications",
            "Notifications written by one inbox transaction",
            buckets=_ROUND_SIZES,
            registry=registry,
        )

        self._accepted_via: dict[str, Counter] = {}

    def count_accepted(self, via: str, count: int) -> None:
        child = self._accepted_via.get(via)
        if child is None:
            child = self._accepted_via[via] = self.accepted.labels(via)
        child.inc(count)

    def count_rejected(self, via: str, exc: errors.BookingCacheError) -> None:
        """Count a request refused for what the sender sent (not for the service's faults)."""
        reason = _rejection_reason(exc)
        if reason is not None:
            self.rejected.labels(via, reason).inc()

    def observe_round(self, requests: int, items: int) -> None:
        self.round_requests.observe(requests)
        self.round_items.observe(items)


def _rejection_reason(exc: errors.BookingCacheError) -> str | None:
    for kind, reason in _REJECTIONS:
        if isinstance(exc, kind):
            return reason
    return None


# Most specific first.
_REJECTIONS: tuple[tuple[type[errors.BookingCacheError], str], ...] = (
    (errors.BodyTooLarge, "too_large"),
    (errors.UnsupportedMediaType, "media_type"),
    (errors.BadSignature, "signature"),
    (InvalidRelayCall, "invalid"),
    (errors.MalformedBody, "malformed"),
)
