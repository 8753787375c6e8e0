"""Failed authentication, throttled per client address and per claimed tenant.

Every request that presents a credential and fails (a bearer token that is neither the admin
token nor a read token, a relay call whose signature does not verify) takes one unit from two
token buckets: its client address's and, for a token shaped like a read token, the tenant it
names. A bucket holds up to ``burst`` units and refills at ``per_minute`` a minute. A failing
request that finds either bucket empty is answered 429 ``too-many-failed-attempts`` with
``Retry-After`` (whole seconds until a unit is back) instead of 401, and takes nothing.

Only failures are ever throttled: a valid credential is checked first (in memory) and always
gets through, so neither guessing a tenant's tokens nor sharing an address with someone who
guesses can lock a real client out. What is tracked is bounded: at most ``max_tracked`` keys
per scope, the one that failed least recently forgotten first. The client address is the
socket peer, or, behind ``trusted_proxy_hops`` proxies, the address the outermost of them saw
(``client_address``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from starlette.types import Scope

from bookingcache.api.forwarded import forwarded_entry
from bookingcache.errors import TooManyFailedAttempts
from bookingcache.settings import Settings
from bookingcache.telemetry.metricsets import MetricSet

ADDRESS = "address"
TENANT = "tenant"


class ThrottleMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.throttled = Counter(
            "bookingcache_auth_throttled",
            "Failed authentication attempts answered 429, by the scope whose budget was spent "
            "(address or tenant)",
            ["scope"],
            registry=registry,
        )
        for scope in (ADDRESS, TENANT):
            self.throttled.labels(scope=scope)


@dataclass(slots=True)
class _Bucket:
    level: float
    at: dt.datetime


class FailureBudget:
    """Token buckets of failures, by key."""

    def __init__(self, *, per_minute: float, burst: int, max_tracked: int) -> None:
        self._rate_per_s = per_minute / 60.0
        self._burst = float(burst)
        self._max_tracked = max_tracked
        self._buckets: dict[str, _Bucket] = {}

    def _level(self, key: str, now: dt.datetime) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._burst
        elapsed = max(0.0, (now - bucket.at).total_seconds())
        return min(self._burst, bucket.level + elapsed * self._rate_per_s)

    def wait_s(self, key: str, now: dt.datetime) -> float:
        """0 if ``key`` may fail once more now, else the seconds until it may."""
        level = self._level(key, now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self._rate_per_s

    def take(self, key: str, now: dt.datetime) -> None:
        """Spend one unit of ``key``'s budget (it is now the most recent to fail)."""
        level = self._level(key, now) - 1.0
        self._buckets.pop(key, None)
        self._buckets[key] = _Bucket(level, now)
        while len(self._buckets) > self._max_tracked:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class AuthThrottle:
    """The failure budgets of one process (its API app)."""

    def __init__(self, settings: Settings, metrics: ThrottleMetrics) -> None:
        self.addresses = FailureBudget(
            per_minute=settings.auth_failures_per_minute,
            burst=settings.auth_failure_burst,
            max_tracked=settings.auth_throttle_max_tracked,
        )
        self.tenants = FailureBudget(
            per_minute=settings.tenant_auth_failures_per_minute,
            burst=settings.tenant_auth_failure_burst,
            max_tracked=settings.auth_throttle_max_tracked,
        )
        self.trusted_proxy_hops = settings.trusted_proxy_hops
        self._metrics = metrics

    def failed(self, address: str | None, tenant: str | None, *, now: dt.datetime) -> None:
        """Count one failed attempt from ``address`` naming ``tenant`` (either may be unknown);
        ``TooManyFailedAttempts`` instead when either budget is spent."""
        waits: list[tuple[str, float]] = []
        if address is not None:
            waits.append((ADDRESS, self.addresses.wait_s(address, now)))
        if tenant is not None:
            waits.append((TENANT, self.tenants.wait_s(tenant, now)))
        spent = [(scope, wait) for scope, wait in waits if wait > 0]
        if spent:
            for scope, _ in spent:
                self._metrics.throttled.labels(scope=scope).inc()
            retry_after = math.ceil(max(wait for _, wait in spent))
            raise TooManyFailedAttempts(
                f"too many failed attempts; try again in {retry_after} s", retry_after_s=retry_after
            )
        if address is not None:
            self.addresses.take(address, now)
        if tenant is not None:
            self.tenants.take(tenant, now)

    def client_address(self, scope: Scope) -> str | None:
        """The client's address: the socket peer, or with ``trusted_proxy_hops`` = n the n-th
        address from the right of ``X-Forwarded-For`` (what the outermost trusted proxy saw;
        entries left of it are the client's to write). The peer when the header has fewer."""
        client = scope.get("client")
        peer = str(client[0]) if client else None
        return forwarded_entry(scope, b"x-forwarded-for", self.trusted_proxy_hops) or peer
