"""Conversions between table rows and the domain records (plain functions, no I/O)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, type_coerce
from sqlalchemy.engine import Row
from sqlalchemy.types import NullType

from bookingcache.domain.events import BasicEvent, EventType, Sensitivity, ShowAs
from bookingcache.domain.tenancy import (
    CalendarState,
    EventSource,
    GraphAccess,
    GraphPermission,
    NotificationMode,
    Room,
    Tenant,
    TitlePolicy,
)
from bookingcache.domain.timezones import is_valid_time_zone
from bookingcache.errors import InvalidInput
from bookingcache.store.sql.schema import events

_SHOW_AS = {member.value: member for member in ShowAs}
_SENSITIVITY = {member.value: member for member in Sensitivity}
_TYPE = {member.value: member for member in EventType}

EVENT_COLUMNS = (
    events.c.event_id,
    events.c.start_utc,
    events.c.end_utc,
    events.c.is_all_day,
    events.c.show_as,
    events.c.is_cancelled,
    events.c.title,
    events.c.sensitivity,
    events.c.type,
    events.c.series_master_id,
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def as_utc(value: Any) -> dt.datetime:
    """An instant read back raw (an aggregate over a UTC column: text on SQLite, naive or
    aware elsewhere) as an aware UTC datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def require_aware(name: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


def tenant_from_row(row: Row[Any]) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        event_source=EventSource(row.event_source),
        connector_url=row.connector_url,
        title_policy=TitlePolicy(row.title_policy),
        default_time_zone=row.default_time_zone,
        staleness_bound_s=row.staleness_bound_s,
        created_at=row.created_at,
        notification_mode=NotificationMode(row.notification_mode),
        graph=graph_from_row(row),
    )


def graph_from_row(row: Row[Any]) -> GraphAccess | None:
    if row.graph_directory_tenant is None:
        return None
    return GraphAccess(
        directory_tenant=row.graph_directory_tenant,
        client_id=row.graph_client_id,
        permission=None if row.graph_permission is None else GraphPermission(row.graph_permission),
        client_secret_set=row.graph_client_secret is not None,
        certificate_thumbprint=row.graph_certificate_thumbprint,
        revision=row.graph_revision,
    )


TENANT_FIELDS = (
    "name",
    "event_source",
    "connector_url",
    "title_policy",
    "default_time_zone",
    "staleness_bound_s",
    "notification_mode",
    "graph",
)


def tenant_values(tenant: Tenant | dict[str, Any]) -> dict[str, Any]:
    """Column values for the changeable tenant fields, enums as their stored strings."""
    source = (
        tenant
        if isinstance(tenant, dict)
        else {name: getattr(tenant, name) for name in TENANT_FIELDS}
    )
    values: dict[str, Any] = {}
    for name, value in source.items():
        if name not in TENANT_FIELDS:
            raise InvalidInput(f"tenant field {name!r} cannot be changed")
        if name == "graph":
            values.update(graph_values(value))
            continue
        if name == "event_source":
            value = _enum(EventSource, value, name)
        elif name == "notification_mode":
            # A tenant made without one gets its event source's default (the store's caller
            # checked the pair).
            value = None if value is None else _enum(NotificationMode, value, name)
        elif name == "title_policy":
            value = _enum(TitlePolicy, value, name)
        elif name == "staleness_bound_s":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
                raise InvalidInput("staleness_bound_s must be a positive 32-bit integer")
        elif name == "name" and (not isinstance(value, str) or not 0 < len(value) <= 300):
            raise InvalidInput("name must be a string of 1 to 300 characters")
        elif name == "default_time_zone" and (
            not isinstance(value, str) or len(value) > 64 or not is_valid_time_zone(value)
        ):
            raise InvalidInput(f"default_time_zone {value!r} is not a known time zone")
        elif name == "connector_url" and value is not None and not isinstance(value, str):
            raise InvalidInput("connector_url must be a string or null")
        values[name] = value
    return values


def graph_values(access: GraphAccess | None) -> dict[str, Any]:
    """Column values of a graph source's access, but not its secret (which the store seals and
    writes with the revision)."""
    if access is None:
        return {"graph_directory_tenant": None, "graph_client_id": None, "graph_permission": None}
    if not isinstance(access, GraphAccess):
        raise InvalidInput("graph must be a GraphAccess or None")
    permission = access.permission
    return {
        "graph_directory_tenant": access.directory_tenant,
        "graph_client_id": access.client_id,
        "graph_permission": None if permission is None else GraphPermission(permission).value,
    }


def _enum(
    kind: type[EventSource] | type[TitlePolicy] | type[NotificationMode], value: Any, name: str
) -> str:
    try:
        return kind(value).value
    except ValueError as exc:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidInput(f"{name} must be one of {allowed}, got {value!r}") from exc


def room_from_row(row: Row[Any]) -> Room:
    return Room(
        tenant_id=row.tenant_id,
        room_id=row.room_id,
        mailbox=row.mailbox,
        name=row.name,
        building=row.building,
        floor=row.floor,
        geometry=row.geometry,
        time_zone=row.time_zone,
        capacity=row.capacity,
    )


def room_values(room: Room, *, at: dt.datetime) -> dict[str, Any]:
    return {
        "tenant_id": room.tenant_id,
        "room_id": room.room_id,
        "mailbox": room.mailbox,
        "name": room.name,
        "building": room.building,
        "floor": room.floor,
        "geometry": room.geometry,
        "time_zone": room.time_zone,
        "capacity": room.capacity,
        "updated_at": at,
    }


def calendar_from_row(row: Row[Any]) -> CalendarState:
    """A row of calendars joined with the tenant's ``default_time_zone``."""
    return CalendarState(
        tenant_id=row.tenant_id,
        mailbox=row.mailbox,
        time_zone=row.time_zone or row.default_time_zone,
        last_refresh_at=row.last_refresh_at,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        window_start=row.window_start,
        window_end=row.window_end,
        extra={
            "delta_link": row.delta_link,
            "consecutive_failures": row.consecutive_failures,
        },
    )


def event_from_tuple(values: tuple[Any, ...]) -> BasicEvent:
    """A BasicEvent from the ``EVENT_COLUMNS`` of one row (the hot path of availability)."""
    (
        event_id,
        start,
        end,
        is_all_day,
        show_as,
        is_cancelled,
        title,
        sensitivity,
        kind,
        series_master_id,
    ) = values
    return BasicEvent(
        id=event_id,
        start=start,
        end=end,
        is_all_day=bool(is_all_day),
        show_as=_SHOW_AS.get(show_as, ShowAs.UNKNOWN),
        is_cancelled=bool(is_cancelled),
        title=title,
        sensitivity=_SENSITIVITY.get(sensitivity, Sensitivity.NORMAL),
        type=_TYPE.get(kind, EventType.SINGLE_INSTANCE),
        series_master_id=series_master_id,
    )


# The bulk read skips the per-value type processing of ``UTCDateTime``: it parses the raw
# driver values itself in one loop (``events_from_raw``), which is what keeps reading tens of
# thousands of events cheap.
RAW_EVENT_COLUMNS = (
    events.c.mailbox,
    events.c.event_id,
    type_coerce(events.c.start_utc, NullType()),
    type_coerce(events.c.end_utc, NullType()),
    *EVENT_COLUMNS[3:],
)


def events_from_raw(rows: Sequence[Any], *, text_times: bool) -> list[tuple[str, BasicEvent]]:
    """(mailbox, event) from rows of ``RAW_EVENT_COLUMNS``. ``text_times``: the driver gives
    SQLite's ISO 8601 UTC text; otherwise aware datetimes (asyncpg gives them in UTC)."""
    parse = dt.datetime.fromisoformat if text_times else _as_utc
    show_as_of, sensitivity_of, type_of = _SHOW_AS.get, _SENSITIVITY.get, _TYPE.get
    busy, normal, single = ShowAs.UNKNOWN, Sensitivity.NORMAL, EventType.SINGLE_INSTANCE
    found = []
    for row in rows:
        (mailbox, event_id, start, end, all_day, show_as, cancelled, title, sens, kind, master) = (
            row
        )
        event = BasicEvent(
            event_id,
            parse(start),
            parse(end),
            bool(all_day),
            show_as_of(show_as, busy),
            bool(cancelled),
            title,
            sensitivity_of(sens, normal),
            type_of(kind, single),
            master,
        )
        found.append((mailbox, event))
    return found


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)


def event_values(event: BasicEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "start_utc": event.start,
        "end_utc": event.end,
        "is_all_day": event.is_all_day,
        "show_as": ShowAs(event.show_as).value,
        "is_cancelled": event.is_cancelled,
        "title": event.title,
        "sensitivity": Sensitivity(event.sensitivity).value,
        "type": EventType(event.type).value,
        "series_master_id": event.series_master_id,
    }


def overlaps(event: BasicEvent, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether an event belongs to ``[start, end)``: it overlaps the window, or it has no
    duration and lies inside it."""
    return event.start < end and (event.end > start or event.start >= start)


def overlap_condition(
    start: dt.datetime | ColumnElement[Any], end: dt.datetime | ColumnElement[Any]
) -> ColumnElement[bool]:
    """``overlaps`` as SQL on the events table (of given instants, or of bound parameters)."""
    return and_(
        events.c.start_utc < end,
        or_(events.c.end_utc > start, events.c.start_utc >= start),
    )
