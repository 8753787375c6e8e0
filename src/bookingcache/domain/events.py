"""The basic event: the only shape of a calendar item the product ever stores or passes on.

Only these fields leave a customer's tenant (see docs/architecture.md): no body, attendees,
attachments, locations or organizer addresses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class ShowAs(StrEnum):
    FREE = "free"
    TENTATIVE = "tentative"
    BUSY = "busy"
    OOF = "oof"
    WORKING_ELSEWHERE = "workingElsewhere"
    UNKNOWN = "unknown"


class Sensitivity(StrEnum):
    NORMAL = "normal"
    PERSONAL = "personal"
    PRIVATE = "private"
    CONFIDENTIAL = "confidential"


class EventType(StrEnum):
    SINGLE_INSTANCE = "singleInstance"
    OCCURRENCE = "occurrence"
    EXCEPTION = "exception"
    SERIES_MASTER = "seriesMaster"


@dataclass(frozen=True, slots=True)
class BasicEvent:
    """One calendar item as the cache keeps it.

    ``start``/``end`` are aware UTC instants for timed events. For all-day events
    (``is_all_day``) they are midnight-to-midnight and only their *dates* matter: the room's
    time zone places them (see ``availability.placed_interval``), because Graph reports all-day
    events as local dates whatever time zone was asked for.
    """

    id: str
    start: dt.datetime
    end: dt.datetime
    is_all_day: bool = False
    show_as: ShowAs = ShowAs.BUSY
    is_cancelled: bool = False
    title: str | None = None
    sensitivity: Sensitivity = Sensitivity.NORMAL
    type: EventType = EventType.SINGLE_INSTANCE
    series_master_id: str | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"event {self.id!r}: start and end must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"event {self.id!r}: end is before start")


@dataclass(frozen=True, slots=True)
class EventDiff:
    """What a window replacement changed in the cache."""

    added: tuple[BasicEvent, ...] = ()
    changed: tuple[BasicEvent, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)
