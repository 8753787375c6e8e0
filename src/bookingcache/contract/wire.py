"""The basic event as it travels between connector/relay and service (docs/architecture.md):
``id, start, end, isAllDay, showAs, isCancelled, subject, sensitivity, type, seriesMasterId``
with ISO 8601 UTC ``Z`` times. Parsed strictly: a malformed event is refused, never guessed."""

from __future__ import annotations

import datetime as dt
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from bookingcache.domain.events import BasicEvent, EventType, Sensitivity, ShowAs


class WireEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(min_length=1, max_length=1024)
    start: AwareDatetime
    end: AwareDatetime
    is_all_day: bool = Field(alias="isAllDay")
    show_as: ShowAs = Field(alias="showAs")
    is_cancelled: bool = Field(default=False, alias="isCancelled")
    subject: str | None = Field(default=None, max_length=1024)
    sensitivity: Sensitivity = Sensitivity.NORMAL
    type: EventType = EventType.SINGLE_INSTANCE
    series_master_id: str | None = Field(default=None, alias="seriesMasterId", max_length=1024)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self

    def to_event(self) -> BasicEvent:
        return BasicEvent(
            id=self.id,
            start=self.start.astimezone(dt.UTC),
            end=self.end.astimezone(dt.UTC),
            is_all_day=self.is_all_day,
            show_as=self.show_as,
            is_cancelled=self.is_cancelled,
            title=self.subject,
            sensitivity=self.sensitivity,
            type=self.type,
            series_master_id=self.series_master_id,
        )


class WireWindow(BaseModel):
    """The connector's answer to ``GET /v1/calendars/{mailbox}/events``."""

    model_config = ConfigDict(extra="ignore")

    mailbox: str
    start: AwareDatetime
    end: AwareDatetime
    events: list[WireEvent]


def format_utc(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
