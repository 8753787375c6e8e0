"""Prometheus metrics of the change stream, in the app's own registry: clients connected, events
sent by kind, and resets by reason. No label names a tenant or carries anything a client sent."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from bookingcache.telemetry.metricsets import MetricSet


class StreamMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "bookingcache_stream_clients",
            "Change-stream clients connected to this process",
            registry=registry,
        )
        self.events = Counter(
            "bookingcache_stream_events_sent",
            "Change-stream events written to clients, by event (snapshot, room, reset)",
            ["event"],
            registry=registry,
        )
        self.resets = Counter(
            "bookingcache_stream_resets",
            "Resets sent to change-stream clients, by reason (expired, slow, rooms)",
            ["reason"],
            registry=registry,
        )
