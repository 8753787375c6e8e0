"""A room's cached basic events in a window, after the tenant's title policy."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bookingcache.api.answers import EARLIEST, LATEST, checked_window, end_of_local_day
from bookingcache.api.availability import BEARER, ReadingDep, TimeRange
from bookingcache.api.problems import problem_responses
from bookingcache.domain.availability import placed_interval
from bookingcache.domain.events import EventType, Sensitivity, ShowAs
from bookingcache.domain.titles import displayed_title

UTC = dt.UTC

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["events"],
    responses=problem_responses(401, 403, 404, 422),
)


class EventOut(BaseModel):
    id: str
    start: dt.datetime = Field(description="ISO 8601 UTC; all-day events placed in the room's zone")
    end: dt.datetime
    is_all_day: bool
    start_date: dt.date | None = Field(description="all-day events: the first local date")
    end_date: dt.date | None = Field(description="all-day events: the local date after the last")
    show_as: ShowAs
    is_cancelled: bool
    title: str | None = Field(description="after the tenant's title policy")
    sensitivity: Sensitivity
    type: EventType
    series_master_id: str | None


class RoomEventsOut(BaseModel):
    room_id: str
    mailbox: str
    time_zone: str
    window: TimeRange
    last_synced_at: dt.datetime | None
    events: list[EventOut]


@router.get(
    "/rooms/{room}/events",
    response_model=RoomEventsOut,
    summary="A room's cached basic events in a window, after the title policy",
    openapi_extra=BEARER,
)
async def room_events(
    room: str,
    reading: ReadingDep,
    start: Annotated[dt.datetime | None, Query(description="default: start of today")] = None,
    end: Annotated[dt.datetime | None, Query(description="default: end of start's day")] = None,
) -> RoomEventsOut:
    model, tenant, clock = reading.model, reading.tenant, reading.clock
    view = await model.view(tenant)
    entry = await model.room(view, room)
    if start is None:
        local_now = clock.now().astimezone(entry.tz)
        start = dt.datetime.combine(local_now.date(), dt.time(), tzinfo=entry.tz).astimezone(UTC)
    if end is None:
        day_of = start if start.tzinfo is not None and EARLIEST <= start < LATEST else clock.now()
        end = end_of_local_day(day_of, entry.tz)
    window = checked_window(start, end)
    found = await model.events(view, entry.mailbox, start=window.start, end=window.end)
    shown: list[EventOut] = []
    for event in found:
        placed = placed_interval(event, entry.tz)
        if not (placed.overlaps(window) or (placed.is_empty and window.contains(placed.start))):
            continue
        shown.append(
            EventOut(
                id=event.id,
                start=placed.start,
                end=placed.end,
                is_all_day=event.is_all_day,
                start_date=event.start.date() if event.is_all_day else None,
                end_date=event.end.date() if event.is_all_day else None,
                show_as=event.show_as,
                is_cancelled=event.is_cancelled,
                title=displayed_title(event, tenant.title_policy),
                sensitivity=event.sensitivity,
                type=event.type,
                series_master_id=event.series_master_id,
            )
        )
    shown.sort(key=lambda item: (item.start, item.id))
    return RoomEventsOut(
        room_id=entry.room_id,
        mailbox=entry.mailbox,
        time_zone=entry.time_zone,
        window=TimeRange(start=window.start, end=window.end),
        last_synced_at=view.calendar(entry.mailbox).last_success_at,
        events=shown,
    )
