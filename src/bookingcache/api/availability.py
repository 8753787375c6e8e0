"""Availability of map rooms: status now, next change, busy intervals, free slots, segments.

Answers come from the in-memory read model. Each room's answer is encoded once and kept with
its calendar's cached events: it stays valid until the room's status next changes, its data
turns stale, or the calendar is re-read, so a map polling a floor gets bytes, not work.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bookingcache.api.deps import ClockDep, ContainerDep, TenantReader
from bookingcache.api.problems import FieldError, ProblemError, problem_responses
from bookingcache.domain.availability import (
    RoomAvailability,
    RoomStatus,
    room_availability,
    validate_window,
)
from bookingcache.domain.intervals import Interval
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import StoreUnavailable
from bookingcache.readmodel import ReadModel, RoomEntry, TenantView

UTC = dt.UTC
MAX_WINDOW_DAYS = 62
MAX_BULK_ROOMS = 5000
DEFAULT_MIN_FREE_MINUTES = 15
_MEMO_PER_CALENDAR = 4
_FOREVER = dt.datetime.max.replace(tzinfo=UTC)

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["availability"],
    responses=problem_responses(401, 403, 404, 422),
)


def get_read_model(container: ContainerDep) -> ReadModel:
    model = getattr(container, "read_model", None)
    if not isinstance(model, ReadModel):
        raise StoreUnavailable("the availability read model is not running")
    return model


ReadModelDep = Annotated[ReadModel, Depends(get_read_model)]


# --- wire shapes -----------------------------------------------------------------------------


class TimeRange(BaseModel):
    start: dt.datetime = Field(description="ISO 8601 UTC, e.g. 2026-11-24T08:00:00Z")
    end: dt.datetime


class StatusSegmentOut(TimeRange):
    status: RoomStatus


class RoomAvailabilityOut(BaseModel):
    room_id: str
    mailbox: str
    name: str
    building: str | None
    floor: str | None
    time_zone: str = Field(description="the room's IANA or Windows zone; places all-day events")
    window: TimeRange
    status: RoomStatus = Field(description="now; unknown when never synced or stale")
    next_change_at: dt.datetime | None = Field(
        description="when the status next changes, looked for up to the window's end"
    )
    next_status: RoomStatus | None
    stale: bool = Field(description="the calendar was never synced or not within the bound")
    last_synced_at: dt.datetime | None
    busy: list[TimeRange] = Field(description="merged stretches taken (tentative, busy, oof)")
    free: list[TimeRange] = Field(description="gaps of at least min_free_minutes")
    segments: list[StatusSegmentOut] = Field(description="stretches of constant non-free status")


class BulkAvailabilityRequest(BaseModel):
    """Either ``rooms`` (map room ids) or a ``building`` with an optional ``floor``."""

    model_config = ConfigDict(extra="forbid")

    rooms: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=MAX_BULK_ROOMS
    )
    building: str | None = Field(default=None, min_length=1, max_length=200)
    floor: str | None = Field(default=None, min_length=1, max_length=64)
    start: dt.datetime | None = Field(default=None, description="default: now (to the minute)")
    end: dt.datetime | None = Field(default=None, description="default: end of each room's day")
    min_free_minutes: int = Field(default=DEFAULT_MIN_FREE_MINUTES, ge=1, le=1440)

    @model_validator(mode="after")
    def _one_selection(self) -> BulkAvailabilityRequest:
        if (self.rooms is None) == (self.building is None):
            raise ValueError("give either 'rooms' or 'building' (with an optional 'floor')")
        if self.floor is not None and self.building is None:
            raise ValueError("'floor' needs 'building'")
        return self


class BulkAvailabilityOut(BaseModel):
    rooms: list[RoomAvailabilityOut]


# --- windows ---------------------------------------------------------------------------------


def utc_text(instant: dt.datetime) -> str:
    """ISO 8601 in UTC with ``Z``."""
    text = instant.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def end_of_local_day(instant: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The next local midnight after ``instant`` in ``tz``, as UTC."""
    local = instant.astimezone(tz)
    following = local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(following, dt.time(), tzinfo=tz).astimezone(UTC)


def request_window(
    start: dt.datetime | None, end: dt.datetime | None, *, now: dt.datetime, tz: dt.tzinfo
) -> Interval:
    """The asked window; by default from now (to the minute) to the end of the room's day."""
    if start is None:
        start = now.astimezone(UTC).replace(second=0, microsecond=0)
    if end is None:
        end = end_of_local_day(start if start.tzinfo is not None else now, tz)
    return validate_window(start, end, max_days=MAX_WINDOW_DAYS)


# --- answers ---------------------------------------------------------------------------------


def _ranges(intervals: list[Interval]) -> list[dict[str, str]]:
    return [{"start": utc_text(i.start), "end": utc_text(i.end)} for i in intervals]


def _encode(
    entry: RoomEntry, window: Interval, answer: RoomAvailability, synced: dt.datetime | None
) -> str:
    room = entry.room
    body: dict[str, Any] = {
        "room_id": room.room_id,
        "mailbox": room.mailbox,
        "name": room.name,
        "building": room.building,
        "floor": room.floor,
        "time_zone": entry.time_zone,
        "window": {"start": utc_text(window.start), "end": utc_text(window.end)},
        "status": answer.status.value,
        "next_change_at": utc_text(answer.next_change_at) if answer.next_change_at else None,
        "next_status": answer.next_status.value if answer.next_status else None,
        "stale": answer.stale,
        "last_synced_at": utc_text(synced) if synced else None,
        "busy": _ranges(answer.busy),
        "free": _ranges(answer.free),
        "segments": [
            {"start": utc_text(s.start), "end": utc_text(s.end), "status": s.status.value}
            for s in answer.segments
        ],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _valid_until(
    answer: RoomAvailability, window: Interval, synced: dt.datetime | None, bound: dt.timedelta
) -> dt.datetime:
    """Until when the same request gets the same answer: the status holds until its next
    change (or, with none, the window's end) and freshness until the staleness bound."""
    if answer.stale:
        return _FOREVER  # stays stale until a sync, and a sync re-reads the calendar
    until = answer.next_change_at or window.end
    if synced is not None:
        until = min(until, synced + bound)
    return until


async def room_answers(
    model: ReadModel,
    view: TenantView,
    entries: list[RoomEntry],
    *,
    tenant: Tenant,
    now: dt.datetime,
    start: dt.datetime | None,
    end: dt.datetime | None,
    min_free: dt.timedelta,
) -> list[str]:
    """Each room's encoded answer, from the memo when the same request is still valid."""
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    await model.confirm_sync_state(view, (e.mailbox for e in entries), now=now, bound=bound)
    answers: list[str] = []
    for entry in entries:
        window = request_window(start, end, now=now, tz=entry.tz)
        calendar = view.calendar(entry.mailbox)
        key = (entry.room_id, window.start, window.end, min_free, bound)
        synced = calendar.last_success_at
        hit = calendar.memo.get(key)
        if hit is not None and hit[0] is entry and hit[1] == synced and hit[2] <= now < hit[3]:
            answers.append(hit[4])
            continue
        span_start, span_end = min(now, window.start), max(now, window.end)
        events = await model.events(view, entry.mailbox, start=span_start, end=span_end)
        answer = room_availability(
            events,
            now=now,
            window=window,
            tz=entry.tz,
            min_free=min_free,
            last_success_at=synced,
            staleness_bound=bound,
        )
        encoded = _encode(entry, window, answer, synced)
        if view.covers(span_start, span_end):
            if len(calendar.memo) >= _MEMO_PER_CALENDAR and key not in calendar.memo:
                calendar.memo.pop(next(iter(calendar.memo)))
            until = _valid_until(answer, window, synced, bound)
            calendar.memo[key] = (entry, synced, now, until, encoded)
        answers.append(encoded)
    return answers


def _json_response(body: str) -> Response:
    return Response(content=body.encode(), media_type="application/json")


# --- endpoints -------------------------------------------------------------------------------


@router.get(
    "/rooms/{room}/availability",
    response_model=RoomAvailabilityOut,
    summary="A room's status now, next change, busy intervals and free slots",
)
async def room_availability_endpoint(
    room: str,
    tenant: TenantReader,
    model: ReadModelDep,
    clock: ClockDep,
    start: Annotated[dt.datetime | None, Query(description="default: now (to the minute)")] = None,
    end: Annotated[dt.datetime | None, Query(description="default: end of the room's day")] = None,
    min_free_minutes: Annotated[int, Query(ge=1, le=1440)] = DEFAULT_MIN_FREE_MINUTES,
) -> Response:
    view = await model.view(tenant)
    entry = await model.room(view, room)
    [answer] = await room_answers(
        model,
        view,
        [entry],
        tenant=tenant,
        now=clock.now(),
        start=start,
        end=end,
        min_free=dt.timedelta(minutes=min_free_minutes),
    )
    return _json_response(answer)


@router.post(
    "/availability",
    response_model=BulkAvailabilityOut,
    summary="Availability of many rooms: a list of room ids, or a building and optional floor",
)
async def bulk_availability(
    body: BulkAvailabilityRequest,
    tenant: TenantReader,
    model: ReadModelDep,
    clock: ClockDep,
) -> Response:
    view = await model.view(tenant)
    if body.rooms is not None:
        await model.recheck_unknown(view, body.rooms)
        missing = [
            FieldError(
                field=f"body.rooms[{index}]",
                message=f"room {room_id!r} is not linked in tenant {tenant.id!r}",
                type="not_found",
            )
            for index, room_id in enumerate(body.rooms)
            if room_id not in view.rooms
        ]
        if missing:
            raise ProblemError(
                404, "not-found", f"{len(missing)} of the rooms are unknown", field_errors=missing
            )
        entries = [view.rooms[room_id] for room_id in dict.fromkeys(body.rooms)]
    else:
        assert body.building is not None
        entries = view.rooms_where(building=body.building, floor=body.floor)
    answers = await room_answers(
        model,
        view,
        entries,
        tenant=tenant,
        now=clock.now(),
        start=body.start,
        end=body.end,
        min_free=dt.timedelta(minutes=body.min_free_minutes),
    )
    return _json_response('{"rooms":[' + ",".join(answers) + "]}")
