"""The connector's Prometheus metrics (``GET /metrics`` on ``bookingcache-connector serve``).

Counts are kept here in plain Python, so the core needs no metrics library (an Azure Functions
app has nothing to scrape); :func:`render` turns them and the live gauges into Prometheus'
text format with ``prometheus_client`` (the ``server`` extra). Label values come from short
fixed sets, never from mailboxes, URLs or error texts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

PREFIX = "bookingcache_connector"


class Metrics:
    """Counters, each with one label; thread-safe (MSAL runs in a worker thread)."""

    HELP: dict[str, tuple[str, str]] = {
        "relay_calls": ("outcome", "Relay calls to the service: relayed, refused, failed."),
        "subscription_outcomes": (
            "status",
            "Subscription convergence and renewal rows, by status (created, renewed, ...).",
        ),
        "graph_requests": (
            "outcome",
            "Graph requests by outcome: success, client_error, server_error, unreachable.",
        ),
        "graph_throttled": ("status", "Graph answers that asked to wait (429, 503)."),
        "token_failures": ("reason", "Failed token requests to Entra ID, by reason."),
        "token_refreshes": ("reason", "Cached tokens dropped and acquired anew, by reason."),
    }

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {name: Counter() for name in self.HELP}
        self._lock = threading.Lock()

    def inc(self, name: str, label: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name][label] += amount

    def count(self, name: str, label: str) -> int:
        with self._lock:
            return self._counts[name][label]

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(counts) for name, counts in self._counts.items()}


Gauges = Callable[[], dict[str, tuple[str, float | dict[str, float]]]]


def render(metrics: Metrics, gauges: Gauges) -> tuple[bytes, str]:
    """The exposition (body, content type): the counters, then ``gauges()`` read now (name to
    (help, value) or (help, {loop: value}))."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    class _Collector:
        def collect(self) -> Iterator[Any]:
            snapshot = metrics.snapshot()
            for name, (label, text) in Metrics.HELP.items():
                family = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=[label])
                for label_value, count in sorted(snapshot[name].items()):
                    family.add_metric([label_value], count)
                yield family
            for name, (about, value) in gauges().items():
                if isinstance(value, dict):
                    gauge = GaugeMetricFamily(f"{PREFIX}_{name}", about, labels=["loop"])
                    for loop, number in sorted(value.items()):
                        gauge.add_metric([loop], number)
                    yield gauge
                else:
                    yield GaugeMetricFamily(f"{PREFIX}_{name}", about, value=value)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def age_s(oldest: datetime | None, now: datetime) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
