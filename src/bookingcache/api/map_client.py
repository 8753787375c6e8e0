"""What a map client reads with the tenant's read token: the buildings and floors, the rooms
with their names, capacities and outlines, and the rooms free for a span, ranked by fit.

Everything is answered from the in-memory read model, like availability (``availability``):
the room index for the listings, the cached events and sync states for the free rooms.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from bookingcache.api.answers import checked_window, end_of_local_day, utc_text
from bookingcache.api.availability import BEARER, ReadingDep
from bookingcache.api.problems import problem_responses
from bookingcache.api.room_input import MAX_CAPACITY, PRINTABLE_PATTERN
from bookingcache.domain.availability import RoomSchedule, is_stale
from bookingcache.errors import InvalidWindow
from bookingcache.read.model import RoomEntry, TenantView

UTC = dt.UTC
DEFAULT_FREE_MINUTES = 30
DEFAULT_FREE_LIMIT = 20
MAX_FREE_LIMIT = 1000
# Whole listing bodies kept per tenant view (dropped whenever the view changes).
_LISTING = "map-listing"

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["map"],
    responses=problem_responses(401, 403, 404, 422),
)

LabelQuery = Annotated[str | None, Query(max_length=100, pattern=PRINTABLE_PATTERN)]


# --- order -----------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?\d+")
_DIGITS = re.compile(r"(\d+)")


def natural_key(label: str | None) -> tuple[Any, ...]:
    """Floors in the order people count them: whole numbers first, by value ("-1", "0", "2",
    "10"), then other labels with their digit runs compared as numbers ("B2" before "B10"),
    then no floor at all."""
    if label is None:
        return (2,)
    if _NUMBER.fullmatch(label):
        return (0, int(label), label)
    parts = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
        for part in _DIGITS.split(label)
        if part
    )
    return (1, parts, label)


def _building_key(building: str | None) -> tuple[int, str]:
    return (1, "") if building is None else (0, building)


def _placement_key(entry: RoomEntry) -> tuple[Any, ...]:
    room = entry.room
    return (_building_key(room.building), natural_key(room.floor), room.room_id)


# --- wire shapes -----------------------------------------------------------------------------


class FloorOut(BaseModel):
    id: str | None = Field(description="the floor's label; null for rooms without a floor")
    rooms: int = Field(description="how many rooms the floor has")


class BuildingOut(BaseModel):
    id: str | None = Field(description="the building's id; null for rooms without a building")
    rooms: int = Field(description="how many rooms the building has")
    floors: list[FloorOut] = Field(description="in natural order: 2 before 10, no floor last")


class BuildingsOut(BaseModel):
    buildings: list[BuildingOut] = Field(description="by id; rooms without a building last")


class MapRoomOut(BaseModel):
    id: str = Field(description="the room's id in the map")
    name: str
    building: str | None
    floor: str | None
    capacity: int | None = Field(description="how many people it seats, when known")
    geometry: dict[str, Any] | None = Field(
        description="the GeoJSON geometry given when the room was linked or imported"
    )


class MapRoomsOut(BaseModel):
    rooms: list[MapRoomOut] = Field(description="by building, floor (natural order) and id")


class FreeRoomOut(BaseModel):
    id: str
    name: str
    building: str | None
    floor: str | None
    capacity: int | None
    free_until: dt.datetime | None = Field(
        description="when the room is next taken, looked for until the end of the room's "
        "local day in which the span ends; null when it stays free until then"
    )


class FreeRoomsOut(BaseModel):
    start: dt.datetime = Field(description="the span's start, ISO 8601 UTC")
    end: dt.datetime = Field(description="the span's end (start plus minutes)")
    rooms: list[FreeRoomOut] = Field(
        description="the rooms free for the whole span, best fit first: the smallest known "
        "capacity that fits (unknown capacities last), then the soonest free_until (the "
        "least free time left over after the span; free for the rest of the day last), then "
        "name and id"
    )


# --- endpoints -------------------------------------------------------------------------------


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _kept(view: TenantView, key: tuple[object, ...]) -> bytes | None:
    hit = view.answers.get(key)
    if hit is not None and hit[0] == view.generation:
        body: bytes = hit[3]
        return body
    return None


def _keep(view: TenantView, key: tuple[object, ...], now: dt.datetime, body: bytes) -> bytes:
    """Keep a listing until the view changes (``TenantView.changed`` clears ``answers``); the
    entry has the shape ``answers.bulk_answer`` keeps, which bounds the total size."""
    view.answers[key] = (view.generation, now, dt.datetime.max.replace(tzinfo=UTC), body)
    return body


def buildings_document(entries: Iterable[RoomEntry]) -> dict[str, Any]:
    counts = Counter((entry.room.building, entry.room.floor) for entry in entries)
    floors: dict[str | None, list[tuple[str | None, int]]] = {}
    for (building, floor), count in counts.items():
        floors.setdefault(building, []).append((floor, count))
    buildings = []
    for building in sorted(floors, key=_building_key):
        listed = sorted(floors[building], key=lambda item: natural_key(item[0]))
        buildings.append(
            {
                "id": building,
                "rooms": sum(count for _, count in listed),
                "floors": [{"id": floor, "rooms": count} for floor, count in listed],
            }
        )
    return {"buildings": buildings}


@router.get(
    "/buildings",
    response_model=BuildingsOut,
    summary="The tenant's buildings and their floors, with how many rooms each has",
    openapi_extra=BEARER,
)
async def buildings(reading: ReadingDep) -> Response:
    view = await reading.model.view(reading.tenant)
    key = (_LISTING, "buildings")
    body = _kept(view, key)
    if body is None:
        document = buildings_document(view.rooms.values())
        body = _keep(view, key, reading.clock.now(), _dumps(document))
    return Response(content=body, media_type="application/json")


def _map_room(entry: RoomEntry) -> dict[str, Any]:
    room = entry.room
    return {
        "id": room.room_id,
        "name": room.name,
        "building": room.building,
        "floor": room.floor,
        "capacity": room.capacity,
        "geometry": room.geometry,
    }


def _selected(
    entries: Iterable[RoomEntry], building: str | None, floor: str | None
) -> list[RoomEntry]:
    return [
        entry
        for entry in entries
        if (building is None or entry.room.building == building)
        and (floor is None or entry.room.floor == floor)
    ]


@router.get(
    "/map/rooms",
    response_model=MapRoomsOut,
    summary="The rooms a map draws: name, building, floor, capacity and geometry",
    openapi_extra=BEARER,
)
async def map_rooms(
    reading: ReadingDep,
    building: LabelQuery = None,
    floor: LabelQuery = None,
) -> Response:
    view = await reading.model.view(reading.tenant)
    key = (_LISTING, "rooms", building, floor)
    body = _kept(view, key)
    if body is None:
        selected = sorted(_selected(view.rooms.values(), building, floor), key=_placement_key)
        document = {"rooms": [_map_room(entry) for entry in selected]}
        body = _keep(view, key, reading.clock.now(), _dumps(document))
    return Response(content=body, media_type="application/json")


def free_span(
    start: dt.datetime | None, minutes: int, *, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The asked span in UTC: from ``start`` (default: now, to the minute) for ``minutes``;
    ``InvalidWindow`` when naive, out of range, or already over."""
    if start is None:
        start = now.astimezone(UTC).replace(second=0, microsecond=0)
    try:
        end = start + dt.timedelta(minutes=minutes)
    except OverflowError:
        raise InvalidWindow("the span is out of range") from None
    window = checked_window(start, end)
    if window.end <= now:
        raise InvalidWindow(
            f"the span ended at {utc_text(window.end)}, before now ({utc_text(now)}): "
            "ask about a span that is not over"
        )
    return window.start, window.end


def _rank(item: tuple[RoomEntry, dt.datetime | None]) -> tuple[Any, ...]:
    room = item[0].room
    capacity = (0, room.capacity) if room.capacity is not None else (1, 0)
    until = (0, item[1]) if item[1] is not None else (1, dt.datetime.min.replace(tzinfo=UTC))
    return (capacity, until, room.name, room.room_id)


@router.get(
    "/rooms:free",
    response_model=FreeRoomsOut,
    summary="Rooms free for a whole span, best fit first",
    description="A room is offered when its calendar is fresh (synced within the tenant's "
    "staleness bound) and nothing that takes it (tentative, busy, out of office) overlaps "
    "`[start, start + minutes)`. Rooms never synced or stale are never offered.",
    openapi_extra=BEARER,
)
async def free_rooms(
    reading: ReadingDep,
    start: Annotated[
        dt.datetime | None,
        Query(description="ISO 8601 with an offset; default: now (to the minute)"),
    ] = None,
    minutes: Annotated[int, Query(ge=1, le=1440, description="the span's length")] = (
        DEFAULT_FREE_MINUTES
    ),
    capacity: Annotated[
        int | None, Query(ge=0, le=MAX_CAPACITY, description="at least this many seats")
    ] = None,
    building: LabelQuery = None,
    floor: LabelQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_FREE_LIMIT)] = DEFAULT_FREE_LIMIT,
) -> Response:
    model, tenant = reading.model, reading.tenant
    now = reading.clock.now()
    span_start, span_end = free_span(start, minutes, now=now)
    view = await model.view(tenant)
    candidates = [
        entry
        for entry in _selected(view.rooms.values(), building, floor)
        if capacity is None or (entry.room.capacity is not None and entry.room.capacity >= capacity)
    ]
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    mailboxes = sorted({entry.mailbox for entry in candidates})
    await model.confirm_sync_state(view, mailboxes, now=now, bound=bound)
    fresh = [
        entry
        for entry in candidates
        if not is_stale(view.calendar(entry.mailbox).last_success_at, now=now, bound=bound)
    ]
    ends = {entry.room_id: end_of_local_day(span_end, entry.tz) for entry in fresh}
    look_until = max(ends.values(), default=span_end)
    events = await model.events_of(
        view, sorted({entry.mailbox for entry in fresh}), start=span_start, end=look_until
    )
    free: list[tuple[RoomEntry, dt.datetime | None]] = []
    for entry in fresh:
        schedule = RoomSchedule.from_events(events[entry.mailbox], tz=entry.tz)
        taken = schedule.first_taken(span_start, ends[entry.room_id])
        if taken is None or taken >= span_end:
            free.append((entry, taken))
    free.sort(key=_rank)
    document = {
        "start": utc_text(span_start),
        "end": utc_text(span_end),
        "rooms": [
            {
                "id": entry.room_id,
                "name": entry.room.name,
                "building": entry.room.building,
                "floor": entry.room.floor,
                "capacity": entry.room.capacity,
                "free_until": utc_text(until) if until is not None else None,
            }
            for entry, until in free[:limit]
        ],
    }
    return Response(content=_dumps(document), media_type="application/json")
