"""Graph ``event`` JSON → ``BasicEvent``: only the basic fields are read, everything else is
dropped at the edge (delta pages carry the full payload, $select is not available there)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bookingcache.contract.http import schema_problems
from bookingcache.domain.events import BasicEvent, EventType, Sensitivity, ShowAs
from bookingcache.domain.timezones import resolve_time_zone
from bookingcache.errors import InvalidInput, UpstreamError


class GraphDateTimeTimeZone(BaseModel):
    model_config = ConfigDict(extra="ignore")

    date_time: str = Field(alias="dateTime")
    time_zone: str = Field(default="UTC", alias="timeZone")


class GraphEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    start: GraphDateTimeTimeZone
    end: GraphDateTimeTimeZone
    is_all_day: bool = Field(default=False, alias="isAllDay")
    show_as: str | None = Field(default=None, alias="showAs")
    is_cancelled: bool = Field(default=False, alias="isCancelled")
    subject: str | None = None
    sensitivity: str | None = None
    type: str | None = None
    series_master_id: str | None = Field(default=None, alias="seriesMasterId")


_SHOW_AS = {member.value.casefold(): member for member in ShowAs}
_SENSITIVITY = {member.value.casefold(): member for member in Sensitivity}
_TYPES = {member.value.casefold(): member for member in EventType}


def _show_as(value: str | None) -> ShowAs:
    # A value Graph adds later must not make a room look free: it becomes "unknown".
    if value is None:
        return ShowAs.BUSY
    return _SHOW_AS.get(value.casefold(), ShowAs.UNKNOWN)


def _sensitivity(value: str | None) -> Sensitivity:
    if value is None:
        return Sensitivity.NORMAL
    # An unrecognised sensitivity is treated as private so titles stay hidden.
    return _SENSITIVITY.get(value.casefold(), Sensitivity.PRIVATE)


def _event_type(value: str | None) -> EventType:
    if value is None:
        return EventType.SINGLE_INSTANCE
    return _TYPES.get(value.casefold(), EventType.SINGLE_INSTANCE)


def _parse_local(value: GraphDateTimeTimeZone, *, all_day: bool) -> dt.datetime:
    try:
        naive = dt.datetime.fromisoformat(value.date_time)
    except ValueError as exc:
        raise UpstreamError(
            f"Graph sent an unreadable dateTime {value.date_time[:40]!r}", kind="graph-bad-answer"
        ) from exc
    if naive.tzinfo is not None:
        naive = naive.replace(tzinfo=None)
    if all_day:
        # All-day events are local dates of the room whatever zone Graph names: keep the date,
        # midnight UTC, and let the room's zone place it.
        return dt.datetime.combine(naive.date(), dt.time(), tzinfo=dt.UTC)
    try:
        zone = resolve_time_zone(value.time_zone)
    except InvalidInput as exc:
        raise UpstreamError(
            f"Graph sent an unknown time zone {value.time_zone[:64]!r}", kind="graph-bad-answer"
        ) from exc
    return naive.replace(tzinfo=zone).astimezone(dt.UTC)


def parse_graph_event(raw: dict[str, Any]) -> BasicEvent | None:
    """The basic event of one Graph event object, or ``None`` for a series master (calendarView
    expands series into occurrences; a master would double-count)."""
    try:
        event = GraphEvent.model_validate(raw)
    except ValidationError as exc:
        raise UpstreamError(
            f"Graph sent an event that is not readable: {schema_problems(exc)}",
            kind="graph-bad-answer",
        ) from exc
    kind = _event_type(event.type)
    if kind is EventType.SERIES_MASTER:
        return None
    start = _parse_local(event.start, all_day=event.is_all_day)
    end = _parse_local(event.end, all_day=event.is_all_day)
    if end < start:
        raise UpstreamError(
            f"Graph event {event.id[:200]!r} ends before it starts", kind="graph-bad-answer"
        )
    return BasicEvent(
        id=event.id,
        start=start,
        end=end,
        is_all_day=event.is_all_day,
        show_as=_show_as(event.show_as),
        is_cancelled=event.is_cancelled,
        title=event.subject,
        sensitivity=_sensitivity(event.sensitivity),
        type=kind,
        series_master_id=event.series_master_id,
    )
