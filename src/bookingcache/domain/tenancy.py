"""Tenants (customer organisations), map rooms and the room calendars they link to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventSource(StrEnum):
    """Where the service reads a tenant's events from (docs/architecture.md)."""

    CONNECTOR = "connector"
    GRAPH = "graph"
    PUSH = "push"


class TitlePolicy(StrEnum):
    SHOW = "show"
    HIDE = "hide"
    HIDE_PRIVATE = "hide_private"


class NotificationMode(StrEnum):
    """Where Graph delivers a tenant's change notifications (its way in)."""

    DIRECT = "direct"  # Alternative 1: the service's own /graph/notifications/{tenant}
    RELAY = "relay"  # Alternative 2: the connector's relay, which calls the service signed


class GraphPermission(StrEnum):
    """What the service's Graph app holds in a tenant's directory: ``read`` (Calendars.Read,
    so calendarView/delta) or ``read_basic`` (Calendars.ReadBasic, plain calendarView)."""

    READ = "read"
    READ_BASIC = "read_basic"


def default_notification_mode(source: EventSource) -> NotificationMode:
    """A push tenant's events come with the relay's calls, so it can only work by relay."""
    return NotificationMode.RELAY if source is EventSource.PUSH else NotificationMode.DIRECT


@dataclass(frozen=True, slots=True)
class GraphAccess:
    """How the service's own Graph app reads a tenant's calendars (event source ``graph``):
    everything but the secret itself, which the store keeps sealed (``GraphCredential``).

    ``client_id`` None means the service's shared app (its settings) with its shared secret;
    ``permission`` None means the shared setting. ``revision`` counts the changes of this
    access (the store bumps it), so a process that built an MSAL app from an older one builds
    a new one.
    """

    directory_tenant: str
    client_id: str | None = None
    permission: GraphPermission | None = None
    client_secret_set: bool = False
    certificate_thumbprint: str | None = None
    revision: int = 0


@dataclass(frozen=True, slots=True)
class GraphCredential:
    """A tenant's own Graph app credential: a client secret, or a certificate's PEM private
    key with the certificate's thumbprint (what MSAL's ``client_credential`` accepts)."""

    client_secret: str | None = None
    private_key: str | None = None
    thumbprint: str | None = None

    def __post_init__(self) -> None:
        if (self.client_secret is None) == (self.private_key is None):
            raise ValueError("a Graph credential is a client secret or a certificate")
        if (self.private_key is None) != (self.thumbprint is None):
            raise ValueError("a certificate needs its private key and its thumbprint")

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        kind = "secret" if self.client_secret is not None else f"certificate {self.thumbprint}"
        return f"GraphCredential({kind})"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    event_source: EventSource = EventSource.CONNECTOR
    connector_url: str | None = None
    title_policy: TitlePolicy = TitlePolicy.HIDE_PRIVATE
    default_time_zone: str = "UTC"
    staleness_bound_s: int = 3600
    created_at: dt.datetime | None = None
    # None: the default of the event source (``default_notification_mode``).
    notification_mode: NotificationMode | None = None
    graph: GraphAccess | None = None

    @property
    def way_in(self) -> NotificationMode:
        """Where Graph delivers this tenant's notifications."""
        if self.notification_mode is None:
            return default_notification_mode(self.event_source)
        return self.notification_mode


@dataclass(frozen=True, slots=True)
class TenantSecrets:
    """Generated when a tenant is created and shown to the caller exactly once.

    ``signing_secret`` signs the service<->connector contract (Standard Webhooks, ``whsec_``
    prefixed base64); ``read_token`` lets map clients read availability. The store keeps the
    signing secret (it must compute HMACs) but only a hash of the read token.
    """

    signing_secret: str
    read_token: str


@dataclass(frozen=True, slots=True)
class ReadTokenInfo:
    """What may be shown of a named read token: never the token, which only its creation
    answer holds. ``last_used_at`` is late by up to a minute or so (the processes that check
    tokens write it in batches)."""

    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Room:
    """A map room (its id in the map) linked to a room mailbox."""

    tenant_id: str
    room_id: str
    mailbox: str
    name: str
    building: str | None = None
    floor: str | None = None
    geometry: dict[str, Any] | None = None
    time_zone: str | None = None  # falls back to the tenant's default time zone
    capacity: int | None = None  # how many people it seats; None when not given


@dataclass(frozen=True, slots=True)
class CalendarState:
    """Sync bookkeeping of one room mailbox's calendar."""

    tenant_id: str
    mailbox: str
    time_zone: str
    last_refresh_at: dt.datetime | None = None
    last_success_at: dt.datetime | None = None
    last_error: str | None = None
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
