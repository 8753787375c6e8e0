"""Knobs of the subscription orchestration, read from ``BOOKINGCACHE_ORCHESTRATION_*``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

NotificationMode = Literal["direct", "relay"]


class OrchestrationSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOOKINGCACHE_ORCHESTRATION_", env_nested_delimiter="__", extra="ignore"
    )

    enabled: bool = True
    # A burst of room changes (an import, an editor session) gives one converge this long after
    # the last change.
    debounce_s: float = Field(default=2.0, ge=0)
    # How often the timer looks for work (lifecycle marks, backoffs, silent calendars, due
    # tenants). Lifecycle events are acted on within one tick.
    tick_s: float = Field(default=2.0, gt=0)
    # Every tenant is re-converged this often whatever happens (the connector renews what
    # expires within 48 hours; Graph's maximum lifetime is just under 7 days).
    reconverge_every_s: float = Field(default=6 * 3600.0, gt=0)
    # ... and as soon as a subscription expires within this.
    renew_within_s: float = Field(default=48 * 3600.0, gt=0)
    # A calendar whose subscription expires within this is reported ``expiring``.
    expiring_within_s: float = Field(default=24 * 3600.0, gt=0)
    # Backoff of a mailbox (or a whole connector) that failed: base * 2^n, capped.
    backoff_base_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=1800.0, gt=0)
    # Lifecycle marks, subscriptions expiring soon and notifications from unknown
    # subscriptions converge a tenant at most this often (the connector may leave a mark
    # standing, say for a mailbox it cannot subscribe).
    react_min_interval_s: float = Field(default=30.0, ge=0)
    connector_timeout_s: float = Field(default=60.0, gt=0)
    # clientState rotation: the previous secret keeps verifying this long.
    client_state_grace_s: float = Field(default=4 * 3600.0, ge=0)
    # Sweep refreshes that found changes no notification announced, in a row, before a
    # calendar is reported ``silent``; a silent calendar is re-read this often.
    silent_after: int = Field(default=2, ge=1)
    silent_resync_s: float = Field(default=60.0, gt=0)
    # Where Graph delivers a tenant's notifications: ``direct`` (Alternative 1, the service's
    # own /graph/notifications/{tenant}) or ``relay`` (Alternative 2, the connector's relay).
    # Tenants not listed use ``direct``, except push tenants, which can only work by relay.
    notification_modes: dict[str, NotificationMode] = Field(default_factory=dict)
