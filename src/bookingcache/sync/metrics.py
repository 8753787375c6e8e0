"""Prometheus metrics of the sync engine, kept in the app's own registry (as the HTTP metrics
are): refreshes by outcome, their duration, and the queue the worker sees."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bookingcache.telemetry.metricsets import MetricSet

# The outcome label's values.
CHANGED = "changed"  # the window was read and the cache changed
UNCHANGED = "unchanged"  # read, nothing changed
SKIPPED = "skipped"  # nothing to read (a push tenant)
GONE = "gone"  # the tenant or calendar went away
THROTTLED = "throttled"  # 429/503: deferred by its Retry-After
FAILED = "failed"  # any other error: retried with backoff
SUPERSEDED = "superseded"  # the claim was taken over before the write: nothing written

_DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SyncMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refreshes = Counter(
            "bookingcache_sync_refreshes",
            "Calendar refreshes finished, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "bookingcache_sync_refresh_duration_seconds",
            "Time from a refresh's claim to its end (source read and replace-window)",
            ["outcome"],
            buckets=_DURATION_BUCKETS_S,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "bookingcache_sync_queue_depth",
            "Refresh jobs waiting to be claimed (due or not), as the worker last saw them",
            registry=registry,
        )
        self.queue_oldest = Gauge(
            "bookingcache_sync_queue_oldest_due_seconds",
            "How long the oldest refresh job that is due has waited to be claimed, as the "
            "worker last saw the queue (0: none waits)",
            registry=registry,
        )
        self.sweep_asked = Counter(
            "bookingcache_sync_sweep_reads",
            "Calendar reads the reconciliation sweep asked for, by the calendar's bound: long "
            "(its subscription is listening), short (any other), overdue (past its bound or "
            "never read, spread out from now). A calendar that a notification gave a job "
            "meanwhile keeps that one",
            ["bound"],
            registry=registry,
        )
        self.running = Gauge(
            "bookingcache_sync_refreshes_running",
            "Refreshes running in this process",
            registry=registry,
        )
