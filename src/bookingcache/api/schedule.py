"""``getSchedule`` answered from the cache, in Graph's request and response shape, so a client
written for ``POST /users/{id}/calendar/getSchedule`` can switch to the cache.

Differences from Graph, on purpose:

* ``schedules`` are map room ids or room mailboxes of the tenant; up to 100 per call. Graph's
  concept page says 20, while Graph itself answered "allowed size = 100": the larger is accepted.
* ``workingHours`` is left out: the cache holds no mailbox settings.
* Items carry the room's name as ``location``; private items carry neither subject nor location.
* A calendar never synced answers with ``error`` (``ErrorFreeBusyGenerationFailed``) and no view;
  one whose data is older than the tenant's staleness bound answers its cached view with
  ``error.responseCode`` ``ErrorStaleFreeBusyData`` so a client can tell.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bookingcache.api.answers import checked_window
from bookingcache.api.availability import BEARER, ReadingDep
from bookingcache.api.numbers import WholeNumber
from bookingcache.api.problems import problem_responses
from bookingcache.domain.availability import (
    availability_view,
    is_stale,
    placed_interval,
    validate_view_interval,
)
from bookingcache.domain.events import BasicEvent, EventType, Sensitivity
from bookingcache.domain.intervals import Interval
from bookingcache.domain.tenancy import Tenant
from bookingcache.domain.timezones import resolve_time_zone
from bookingcache.domain.titles import displayed_title
from bookingcache.errors import InvalidInput, InvalidWindow
from bookingcache.read.model import ReadModel, RoomEntry, TenantView

UTC = dt.UTC
MAX_SCHEDULES = 100
MAX_WINDOW = dt.timedelta(days=62)
ODATA_CONTEXT = (
    "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)"
)
_PRIVATE = frozenset({Sensitivity.PRIVATE, Sensitivity.CONFIDENTIAL})
_PREFER_ZONE = re.compile(r'outlook\.timezone\s*=\s*"([^"]*)"', re.IGNORECASE)

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["getSchedule"],
    responses=problem_responses(401, 403, 404, 422),
)


class DateTimeTimeZone(BaseModel):
    """Graph's ``dateTimeTimeZone``: a local date-time and the zone (IANA or Windows name)."""

    dateTime: str = Field(min_length=10, max_length=40, examples=["2026-11-24T08:00:00"])
    timeZone: str = Field(default="UTC", min_length=1, max_length=128, examples=["UTC"])


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schedules: list[Annotated[str, Field(min_length=1, max_length=320)]] = Field(
        min_length=1, max_length=MAX_SCHEDULES, description="map room ids or room mailboxes"
    )
    startTime: DateTimeTimeZone
    endTime: DateTimeTimeZone
    availabilityViewInterval: WholeNumber = Field(default=30, description="minutes, 5..1440")


class ScheduleItem(BaseModel):
    isPrivate: bool
    status: str
    subject: str | None = None
    location: str | None = None
    start: DateTimeTimeZone
    end: DateTimeTimeZone


class FreeBusyError(BaseModel):
    message: str
    responseCode: str


class ScheduleInformation(BaseModel):
    scheduleId: str
    availabilityView: str
    scheduleItems: list[ScheduleItem]
    error: FreeBusyError | None = None


class ScheduleResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    odata_context: str = Field(alias="@odata.context")
    value: list[ScheduleInformation]


def parse_date_time(value: DateTimeTimeZone, *, field: str) -> dt.datetime:
    """An aware instant from a ``dateTimeTimeZone``; an offset in ``dateTime`` wins."""
    try:
        parsed = dt.datetime.fromisoformat(value.dateTime.strip())
    except ValueError:
        raise InvalidWindow(
            f"{field}.dateTime {value.dateTime!r} is not an ISO 8601 date-time"
        ) from None
    if parsed.tzinfo is None:
        try:
            parsed = parsed.replace(tzinfo=resolve_time_zone(value.timeZone))
        except InvalidInput as exc:
            raise InvalidInput(f"{field}.timeZone: {exc}") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidWindow(f"{field} is out of range") from None


def preferred_zone(prefer: str | None) -> tuple[str, ZoneInfo] | None:
    """The zone of ``Prefer: outlook.timezone="..."``, as (name given, zone)."""
    if not prefer:
        return None
    match = _PREFER_ZONE.search(prefer)
    if match is None:
        return None
    name = match.group(1).strip()
    try:
        zone = resolve_time_zone(name)
    except InvalidInput as exc:
        raise InvalidInput(f"Prefer outlook.timezone: {exc}") from None
    # Echoed in a header and in every item: keep the caller's spelling when it is plain ASCII.
    return (name if name.isascii() else zone.key), zone


def graph_date_time(instant: dt.datetime, zone: dt.tzinfo, name: str) -> dict[str, str]:
    local = instant.astimezone(zone).replace(tzinfo=None)
    return {
        "dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond * 10:07d}",
        "timeZone": name,
    }


def _items(
    events: list[BasicEvent],
    *,
    entry: RoomEntry,
    window: Interval,
    tenant: Tenant,
    zone: dt.tzinfo,
    zone_name: str,
) -> list[dict[str, Any]]:
    items: list[tuple[dt.datetime, dict[str, Any]]] = []
    for event in events:
        if event.is_cancelled or event.type == EventType.SERIES_MASTER:
            continue
        placed = placed_interval(event, entry.tz)
        if not placed.overlaps(window) and not (placed.is_empty and window.contains(placed.start)):
            continue
        private = event.sensitivity in _PRIVATE
        item: dict[str, Any] = {"isPrivate": private, "status": event.show_as.value}
        if not private:
            subject = displayed_title(event, tenant.title_policy)
            if subject is not None:
                item["subject"] = subject
            item["location"] = entry.room.name
        item["start"] = graph_date_time(placed.start, zone, zone_name)
        item["end"] = graph_date_time(placed.end, zone, zone_name)
        items.append((placed.start, item))
    items.sort(key=lambda pair: pair[0])
    return [item for _, item in items]


def _resolve(view: TenantView, schedule: str) -> RoomEntry | None:
    entry = view.rooms.get(schedule)
    if entry is not None:
        return entry
    linked = view.rooms_of_mailbox(schedule)
    return min(linked, key=lambda e: e.room_id) if linked else None


async def _information(
    model: ReadModel,
    view: TenantView,
    schedule: str,
    *,
    tenant: Tenant,
    now: dt.datetime,
    window: Interval,
    interval: dt.timedelta,
    zone: tuple[str, dt.tzinfo],
    digit: str,
) -> dict[str, Any]:
    entry = _resolve(view, schedule)
    if entry is None:
        return {
            "scheduleId": schedule,
            "availabilityView": "",
            "scheduleItems": [],
            "error": {
                "message": f"{schedule!r} is neither a room nor a room mailbox of this tenant",
                "responseCode": "ErrorInvalidUser",
            },
        }
    synced = view.calendar(entry.mailbox).last_success_at
    if synced is None:
        return {
            "scheduleId": schedule,
            "availabilityView": "",
            "scheduleItems": [],
            "error": {
                "message": "the room's calendar has not been synced yet",
                "responseCode": "ErrorFreeBusyGenerationFailed",
            },
        }
    events = await model.events(view, entry.mailbox, start=window.start, end=window.end)
    answer: dict[str, Any] = {
        "scheduleId": schedule,
        "availabilityView": availability_view(
            events, window=window, interval=interval, tz=entry.tz, working_elsewhere_digit=digit
        ),
        "scheduleItems": _items(
            events, entry=entry, window=window, tenant=tenant, zone=zone[1], zone_name=zone[0]
        ),
    }
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    if is_stale(synced, now=now, bound=bound):
        answer["error"] = {
            "message": f"cached data last synced at {synced.isoformat()} is older than the bound",
            "responseCode": "ErrorStaleFreeBusyData",
        }
    return answer


@router.post(
    "/getSchedule",
    response_model=ScheduleResponse,
    response_model_by_alias=True,
    summary="Graph's calendar/getSchedule, answered from the cache",
    description=(
        "Same request and response as Graph's `POST /users/{id}/calendar/getSchedule`. "
        "`schedules` are map room ids or room mailboxes, **up to 100** (Graph's concept page "
        "says 20, while Graph itself reports an allowed size of 100; the larger is accepted). "
        "The window must be shorter than 62 days; `availabilityViewInterval` is 5..1440 "
        'minutes (default 30). `Prefer: outlook.timezone="..."` sets the zone of the '
        "returned times. Unknown schedules, never-synced and stale calendars are reported per "
        "schedule in `error`, as Graph does; `workingHours` is not returned."
    ),
    openapi_extra=BEARER,
)
async def get_schedule(
    body: ScheduleRequest,
    reading: ReadingDep,
    prefer: Annotated[
        str | None,
        Header(description='e.g. outlook.timezone="W. Europe Standard Time"', max_length=500),
    ] = None,
    working_elsewhere_digit: Annotated[
        Literal["0", "4"],
        Query(description="digit for workingElsewhere: 0 (current Graph) or 4 (older Graph)"),
    ] = "0",
) -> JSONResponse:
    start = parse_date_time(body.startTime, field="startTime")
    end = parse_date_time(body.endTime, field="endTime")
    window = checked_window(start, end)
    if window.duration() >= MAX_WINDOW:
        raise InvalidWindow("the window must be shorter than 62 days")
    interval = validate_view_interval(body.availabilityViewInterval)
    preferred = preferred_zone(prefer)
    zone: tuple[str, dt.tzinfo] = preferred if preferred is not None else ("UTC", UTC)
    model, tenant = reading.model, reading.tenant
    view = await model.view(tenant)
    await model.recheck_unknown(view, body.schedules)
    now = reading.clock.now()
    resolved = (_resolve(view, schedule) for schedule in body.schedules)
    await model.confirm_sync_state(
        view,
        (entry.mailbox for entry in resolved if entry is not None),
        now=now,
        bound=dt.timedelta(seconds=tenant.staleness_bound_s),
    )
    value = [
        await _information(
            model,
            view,
            schedule,
            tenant=tenant,
            now=now,
            window=window,
            interval=interval,
            zone=zone,
            digit=working_elsewhere_digit,
        )
        for schedule in body.schedules
    ]
    headers = {"Preference-Applied": f'outlook.timezone="{preferred[0]}"'} if preferred else None
    return JSONResponse({"@odata.context": ODATA_CONTEXT, "value": value}, headers=headers)
