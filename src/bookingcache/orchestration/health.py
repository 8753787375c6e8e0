"""The health of each calendar's subscription, for operators, and its Prometheus metrics.

A calendar is, in this order of precedence:

- ``unsubscribed``: no subscription and no error saying why (not converged yet);
- ``failing``: the subscription could not be created or renewed, a lifecycle event asks for
  action, or the calendar's refreshes keep failing;
- ``silent``: reconciliation keeps finding changes that no notification announced;
- ``expiring``: the subscription ends within ``expiring_within_s``;
- ``healthy``: none of the above.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Gauge, Histogram

from bookingcache.domain.subscriptions import FAILED, NO_ACTION, RECREATE, RENEW
from bookingcache.domain.tenancy import Tenant
from bookingcache.orchestration.silence import SilenceTracker
from bookingcache.store.subscriptions import CalendarRecord, Progress
from bookingcache.telemetry.metricsets import MetricSet


class State(StrEnum):
    HEALTHY = "healthy"
    EXPIRING = "expiring"
    FAILING = "failing"
    SILENT = "silent"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True, slots=True)
class CalendarHealth:
    tenant_id: str
    mailbox: str
    subscription_id: str | None
    expires_at: dt.datetime | None
    last_notification_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_error: str | None
    state: State
    unannounced_changes: int


def judge(
    record: CalendarRecord,
    *,
    now: dt.datetime,
    expiring_within: dt.timedelta,
    silence: SilenceTracker,
) -> CalendarHealth:
    error = record.error or (record.refresh_error if record.consecutive_failures else None)
    if record.subscription_id is None and record.status != FAILED:
        state = State.UNSUBSCRIBED
    elif (
        record.status == FAILED
        or (record.needs_action not in (None, NO_ACTION))
        or record.consecutive_failures > 0
        or (record.expires_at is not None and record.expires_at <= now)
    ):
        state = State.FAILING
    elif silence.silent_since(record.tenant_id, record.mailbox) is not None:
        state = State.SILENT
    elif record.expires_at is not None and record.expires_at - now < expiring_within:
        state = State.EXPIRING
    else:
        state = State.HEALTHY
    if state is State.FAILING and error is None:
        if record.needs_action == RENEW:
            error = "renewal-requested"
        elif record.needs_action == RECREATE:
            error = "recreation-requested"
        elif record.expires_at is not None and record.expires_at <= now:
            error = "subscription-expired"
    return CalendarHealth(
        tenant_id=record.tenant_id,
        mailbox=record.mailbox,
        subscription_id=record.subscription_id,
        expires_at=record.expires_at,
        last_notification_at=record.last_notification_at,
        last_success_at=record.last_success_at,
        last_error=error,
        state=state,
        unannounced_changes=silence.unannounced(record.tenant_id, record.mailbox),
    )


def fresh_since(tenants: Iterable[Tenant], *, now: dt.datetime) -> dict[str, dt.datetime]:
    """Each tenant's oldest successful read that is still fresh (within its staleness bound),
    as ``Subscriptions.progress`` takes it."""
    return {tenant.id: now - dt.timedelta(seconds=tenant.staleness_bound_s) for tenant in tenants}


class HealthMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calendars = Gauge(
            "bookingcache_subscription_calendars",
            "Linked calendars per subscription health state",
            ["state"],
            registry=registry,
        )
        self.notification_lag = Histogram(
            "bookingcache_notification_lag_seconds",
            "From a change notification's arrival to the refresh that committed its change",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.rooms = Gauge(
            "bookingcache_onboarding_rooms",
            "Rooms of every tenant: linked, with a live subscription, read within the staleness "
            "bound",
            ["state"],
            registry=registry,
        )
        self.converges = Gauge(
            "bookingcache_subscription_converge_failures",
            "Tenants whose last subscription converge failed as a whole",
            registry=registry,
        )

    def publish(self, health: list[CalendarHealth]) -> None:
        counts = dict.fromkeys(State, 0)
        for item in health:
            counts[item.state] += 1
        for state, count in counts.items():
            self.calendars.labels(state.value).set(count)

    def publish_progress(self, progress: Collection[Progress]) -> None:
        self.rooms.labels("linked").set(sum(item.linked for item in progress))
        self.rooms.labels("subscribed").set(sum(item.subscribed for item in progress))
        self.rooms.labels("fresh").set(sum(item.fresh for item in progress))
