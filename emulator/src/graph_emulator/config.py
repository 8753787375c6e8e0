"""Every number the emulator reproduces from Graph, in one place so tests and the CLI can change it.

Defaults follow the current Microsoft documentation; where the sources disagree (see the protocol
notes) the current value is the default and the older one is a setting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EmulatorConfig:
    # Tokens: Entra ID hands out 60-90 minute tokens; ``token_lifetime_s`` pins an exact value.
    token_lifetime_s: int | None = None
    token_lifetime_min_s: int = 3600
    token_lifetime_max_s: int = 5400

    # Subscriptions (used by the subscription and delivery part).
    allow_http_notifications: bool = False
    subscription_max_minutes: int = 10_080
    subscription_min_minutes: int = 45
    subscriptions_per_mailbox: int = 1_000
    client_state_max_length: int = 128
    validation_timeout_s: float = 10.0
    delivery_timeout_s: float = 3.0
    retry_timeout_s: float = 10.0
    retry_window_s: float = 4 * 3600.0
    # Reauthorizing (POST .../reauthorize) and renewing (PATCH) one subscription within this
    # long of each other is refused.
    reauthorize_renew_spacing_s: float = 600.0

    # Clock.
    virtual_clock: bool = False

    # Throttling per app across tenants (Graph's global limit): requests per window.
    app_request_limit: int = 130_000
    app_request_window_s: float = 10.0

    # The subscription API's own limits per 20 s window: per app and tenant, and per app across
    # tenants (this emulator has one tenant, so the second binds only when set lower).
    subscription_limit_window_s: float = 20.0
    subscription_writes_per_app_tenant: int = 500
    subscription_writes_per_app: int = 2_000
    subscription_reauthorize_per_app_tenant: int = 1_000
    subscription_reauthorize_per_app: int = 4_000
    subscription_get_per_app_tenant: int = 500
    subscription_get_per_app: int = 2_000
    subscription_list_per_app_tenant: int = 25
    subscription_list_per_app: int = 40

    # Throttling per app id + mailbox (Outlook limits).
    mailbox_concurrency_limit: int = 4
    mailbox_request_limit: int = 10_000
    mailbox_request_window_s: float = 600.0
    throttle_retry_after_s: int = 1
    # Simulated service time of each mailbox request; 0 answers as fast as possible.
    mailbox_latency_s: float = 0.0

    # Paging.
    default_page_size: int = 10
    max_page_size: int = 1000

    # calendarView delta: sync states live this long, and at most this many are kept.
    delta_token_lifetime_s: float = 7 * 24 * 3600.0
    delta_sync_state_capacity: int = 10_000
    # Observed Graph behaviour: a cancelled occurrence gets no @removed entry in calendarView
    # delta (its series master arrives changed instead). True reports it as removed.
    delta_reports_cancelled_occurrences: bool = False

    # getSchedule.
    schedule_max_schedules: int = 20
    schedule_max_window_days: int = 62
    schedule_max_items: int = 1_000
    # Current docs map workingElsewhere to 0; older docs and SDKs used 4.
    schedule_working_elsewhere_digit: str = "0"

    # $batch.
    batch_max_requests: int = 20
    batch_parallelism: int = 4

    # Notification bursts Exchange produces per room write (room bookings re-stamp the item).
    burst_create_updates: int = 3
    burst_edit_updates: int = 3
    burst_delete_updates: int = 2
