"""What the read model holds per tenant: the room index and each calendar's cached events.

Plain data with the lookups answers need; ``readmodel.ReadModel`` fills and refreshes it.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.intervals import Interval
from bookingcache.domain.tenancy import Room
from bookingcache.errors import NotFound

# All-day events are stored at UTC midnights and placed in the room's zone, which moves them by
# up to 14 hours: select them with this much slack either side and let the domain clip.
PLACEMENT_SLACK = dt.timedelta(days=1)
_MAX_SELECTIONS = 256


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """A room of the index with its calendar's resolved time zone."""

    room: Room
    time_zone: str
    tz: ZoneInfo

    @property
    def room_id(self) -> str:
        return self.room.room_id

    @property
    def mailbox(self) -> str:
        return self.room.mailbox


@dataclass(slots=True)
class CachedCalendar:
    """One mailbox's events overlapping the loaded span, sorted by start."""

    mailbox: str
    events: list[BasicEvent]
    starts: list[dt.datetime]
    reach: dt.timedelta  # how far before a window an event starting there can still overlap it
    slack: dt.timedelta  # how far after a window an event starting there can overlap it placed
    last_success_at: dt.datetime | None
    # Answers computed from exactly these events, keyed by their request; dropped with the
    # calendar when it is re-read (api/availability.py decides what a key and value hold).
    memo: dict[Any, Any] = field(default_factory=dict)
    sync_checked_at: dt.datetime | None = None

    @classmethod
    def of(
        cls, mailbox: str, events: Iterable[BasicEvent], last_success_at: dt.datetime | None
    ) -> CachedCalendar:
        ordered = sorted(events, key=lambda event: event.start)
        longest = max((e.end - e.start for e in ordered), default=dt.timedelta(0))
        all_day = any(event.is_all_day for event in ordered)
        return cls(
            mailbox=mailbox,
            events=ordered,
            starts=[event.start for event in ordered],
            reach=longest + (PLACEMENT_SLACK if all_day else dt.timedelta(0)),
            slack=PLACEMENT_SLACK if all_day else dt.timedelta(0),
            last_success_at=last_success_at,
        )

    def overlapping(self, start: dt.datetime, end: dt.datetime) -> list[BasicEvent]:
        """Events that may overlap [start, end) once placed (a superset; the domain clips)."""
        low = bisect.bisect_left(self.starts, start - self.reach)
        high = bisect.bisect_left(self.starts, end + self.slack)
        return self.events[low:high]


@dataclass(slots=True)
class TenantView:
    """What the read model holds for one tenant."""

    tenant_id: str
    created_at: dt.datetime | None
    default_time_zone: str
    horizon: Interval
    loaded_at: dt.datetime
    rooms: dict[str, RoomEntry] = field(default_factory=dict)
    calendars: dict[str, CachedCalendar] = field(default_factory=dict)
    rooms_read_at: dt.datetime | None = None
    # Rooms per (building, floor) as bulk requests ask for them; cleared with the index.
    selections: dict[tuple[str, str | None], list[RoomEntry]] = field(default_factory=dict)
    # Bumped by every change of rooms, events or sync state; whole answers computed under an
    # older generation are not reused (see api/answers.py).
    generation: int = 0
    answers: dict[Any, Any] = field(default_factory=dict)

    def changed(self) -> None:
        self.generation += 1
        self.answers.clear()

    def room(self, room_id: str) -> RoomEntry:
        entry = self.rooms.get(room_id)
        if entry is None:
            raise NotFound(f"room {room_id!r} is not linked in tenant {self.tenant_id!r}")
        return entry

    def rooms_where(self, *, building: str, floor: str | None) -> list[RoomEntry]:
        """The rooms of a building (and floor), ordered by room id."""
        found = self.selections.get((building, floor))
        if found is None:
            found = [
                entry
                for entry in self.rooms.values()
                if entry.room.building == building and (floor is None or entry.room.floor == floor)
            ]
            found.sort(key=lambda entry: entry.room_id)
            if len(self.selections) >= _MAX_SELECTIONS:
                self.selections.clear()
            self.selections[(building, floor)] = found
        return list(found)

    def rooms_of_mailbox(self, mailbox: str) -> list[RoomEntry]:
        folded = mailbox.casefold()
        return [entry for entry in self.rooms.values() if entry.mailbox.casefold() == folded]

    def calendar(self, mailbox: str) -> CachedCalendar:
        cached = self.calendars.get(mailbox)
        if cached is None:
            cached = CachedCalendar.of(mailbox, (), None)
            self.calendars[mailbox] = cached
        return cached

    def covers(self, start: dt.datetime, end: dt.datetime) -> bool:
        return self.horizon.start <= start and end <= self.horizon.end
