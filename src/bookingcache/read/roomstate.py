"""A room's displayed state, as the change stream sends it: status now, its next change, the
current and the next meeting (titles after the tenant's title policy) and staleness.

``room_state`` computes it from the room's cached events and returns, with the encoded JSON
object, the instant it may next differ with nothing else happening (a meeting starting or
ending, the data turning stale, the local day ending). The rules are the availability API's:
``status`` is ``unknown`` exactly when that API would say unknown, and the next change is looked
for up to the end of the room's local day, as that API does by default. The next meeting is the
first to start after now among the events given (the read model's cached horizon).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bookingcache.domain.availability import RoomSchedule, RoomStatus, is_stale
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.schedule import event_rank, local_midnight, placed_bounds
from bookingcache.domain.tenancy import Tenant
from bookingcache.domain.titles import displayed_title
from bookingcache.read.views import RoomEntry

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class RoomFrame:
    """One room's displayed state: its filter keys, the encoded ``RoomState``, its ``room``
    event without an id (encoded once, sent as is to every client that follows the room) and
    until when it holds (None: until something is written)."""

    room_id: str
    building: str | None
    floor: str | None
    data: bytes
    due: dt.datetime | None
    stale: bool
    event: bytes


def _text(instant: dt.datetime | None) -> str | None:
    if instant is None:
        return None
    text = instant.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _meeting(
    event: BasicEvent, bounds: tuple[dt.datetime, dt.datetime], tenant: Tenant
) -> dict[str, Any]:
    return {
        "title": displayed_title(event, tenant.title_policy),
        "start": _text(bounds[0]),
        "end": _text(bounds[1]),
        "show_as": event.show_as.value,
    }


def end_of_day(now: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The next local midnight after ``now`` in ``tz``, as UTC."""
    return local_midnight(now.astimezone(tz).date() + dt.timedelta(days=1), tz)


def room_state(
    entry: RoomEntry,
    events: Sequence[BasicEvent],
    *,
    tenant: Tenant,
    now: dt.datetime,
    last_success_at: dt.datetime | None,
) -> tuple[dict[str, Any], dt.datetime | None]:
    """The room's ``RoomState`` at ``now`` and the instant it may next change by time alone
    (None when only a write can change it: a stale calendar stays unknown until a sync)."""
    tz = entry.tz
    until = end_of_day(now, tz)
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    stale = is_stale(last_success_at, now=now, bound=bound)
    current: tuple[int, dt.datetime, BasicEvent, tuple[dt.datetime, dt.datetime]] | None = None
    upcoming: tuple[dt.datetime, BasicEvent, tuple[dt.datetime, dt.datetime]] | None = None
    for event in events:
        rank = event_rank(event)
        if not rank:
            continue
        bounds = placed_bounds(event, tz)
        start, end = bounds
        if start >= end:
            continue
        if start <= now < end:
            # The highest-ranked meeting running now, the earliest of those on a tie.
            if current is None or (-rank, start) < (-current[0], current[1]):
                current = (rank, start, event, bounds)
        elif now < start and (upcoming is None or start < upcoming[0]):
            upcoming = (start, event, bounds)
    status = RoomStatus.UNKNOWN
    next_change_at: dt.datetime | None = None
    next_status: RoomStatus | None = None
    due: dt.datetime | None = until
    if stale:
        due = None
    else:
        schedule = RoomSchedule.from_events(events, tz=tz)
        status = schedule.status_at(now)
        change = schedule.next_change(now, until=until)
        if change is not None:
            next_change_at, next_status = change
        assert last_success_at is not None
        due = min(until, last_success_at + bound + dt.timedelta(microseconds=1))
    for moment in (
        next_change_at,
        current[3][1] if current is not None else None,
        upcoming[0] if upcoming is not None else None,
    ):
        if moment is not None and due is not None and moment < due:
            due = moment
    room = entry.room
    state = {
        "room": room.room_id,
        "name": room.name,
        "building": room.building,
        "floor": room.floor,
        "capacity": room.capacity,
        "status": status.value,
        "stale": stale,
        "next_change_at": _text(next_change_at),
        "next_status": next_status.value if next_status is not None else None,
        "current": _meeting(current[2], current[3], tenant) if current is not None else None,
        "next": _meeting(upcoming[1], upcoming[2], tenant) if upcoming is not None else None,
    }
    return state, due


def encode(state: dict[str, Any]) -> bytes:
    """The state as one line of compact ASCII JSON: a name or title holding a character some
    readers take for a line break (U+2028, U+0085, ...) is escaped, so every SSE reader sees
    the event's data on one line."""
    return json.dumps(state, separators=(",", ":")).encode("ascii")


def frame_of(
    entry: RoomEntry,
    events: Sequence[BasicEvent],
    *,
    tenant: Tenant,
    now: dt.datetime,
    last_success_at: dt.datetime | None,
) -> RoomFrame:
    state, due = room_state(entry, events, tenant=tenant, now=now, last_success_at=last_success_at)
    data = encode(state)
    return RoomFrame(
        room_id=entry.room_id,
        building=entry.room.building,
        floor=entry.room.floor,
        data=data,
        due=due,
        stale=bool(state["stale"]),
        event=b"event: room\ndata: %s\n\n" % data,
    )
