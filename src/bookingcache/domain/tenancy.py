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
