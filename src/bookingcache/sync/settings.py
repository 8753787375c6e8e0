"""Knobs of the sync engine, read from the environment beside the service settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GraphTenantSettings(BaseModel):
    """How the service's own app reads one customer's Graph (event source ``graph``)."""

    # The customer's Entra tenant id (or verified domain) that MSAL's authority names.
    directory_tenant: str
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # ``read``: the app holds Calendars.Read, so calendarView/delta is used;
    # ``read_basic``: only Calendars.ReadBasic.All, so plain calendarView with $select.
    permission: Literal["read", "read_basic"] | None = None


class GraphSettings(BaseModel):
    """The service's own Graph app, shared by every ``graph`` tenant unless one overrides it."""

    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    scope: str = "https://graph.microsoft.com/.default"
    # A CA bundle to trust for the authority and Graph (a private emulator, a TLS-inspecting proxy).
    ca_bundle: str | None = None
    permission: Literal["read", "read_basic"] = "read"
    request_timeout_s: float = 10.0
    max_concurrent_per_mailbox: int = Field(default=4, ge=1, le=4)
    page_size: int = Field(default=500, ge=1, le=1000)
    # Keyed by the service's tenant id.
    tenants: dict[str, GraphTenantSettings] = Field(default_factory=dict)


class SyncSettings(BaseSettings):
    """Read from ``BOOKINGCACHE_SYNC_*`` (nested with ``__``, e.g.
    ``BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID``; ``BOOKINGCACHE_SYNC_GRAPH__TENANTS`` as JSON)."""

    model_config = SettingsConfigDict(
        env_prefix="BOOKINGCACHE_SYNC_", env_nested_delimiter="__", extra="ignore"
    )

    # A notification makes its calendar's refresh due ``coalesce_ms`` later (the notifications
    # of one Exchange write arrive together); notifications that keep arriving less than
    # ``coalesce_ms`` apart hold it back, for at most ``coalesce_window_ms`` after the first.
    coalesce_ms: int = Field(default=25, ge=0, le=60_000)
    coalesce_window_ms: int = Field(default=300, ge=0, le=60_000)
    window_days: int = Field(default=14, ge=1, le=62)
    # How far before the start of the room's local today the window begins.
    window_past_days: int = Field(default=0, ge=0, le=30)
    # Graph's limits are per app and mailbox (4 concurrent, 10,000 per 10 min) and a refresh
    # keeps one request of its calendar in flight; these caps bound this process's share of
    # the app's global budget and its own load (docs/sync.md, "Concurrency").
    max_refreshes_per_tenant: int = Field(default=64, ge=1)
    max_refreshes_total: int = Field(default=128, ge=1)
    claim_batch: int = Field(default=32, ge=1, le=1000)
    # After a claim that found less than a full batch, the worker waits at least this long
    # before the next: jobs falling due (or released) within it are claimed together.
    claim_gap_ms: int = Field(default=10, ge=0, le=1000)
    poll_interval_ms: int = Field(default=100, ge=10)
    lease_s: float = Field(default=60.0, gt=0)
    max_tries: int = Field(default=8, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    sweep_bound_s: float = Field(default=900.0, gt=0)
    sweep_interval_s: float = Field(default=30.0, gt=0)
    sweep_rate_per_s: float = Field(default=5.0, gt=0)
    # How long the inbox keeps what intake accepted (the record; the work is in the jobs).
    inbox_retention_days: float = Field(default=7.0, gt=0, le=3650)
    connector_timeout_s: float = Field(default=10.0, gt=0)
    graph: GraphSettings = Field(default_factory=GraphSettings)
