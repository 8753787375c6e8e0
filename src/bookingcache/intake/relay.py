"""Alternative 2: the connector relay's signed call, ``POST /v1/tenants/{tenant}/notifications``
(docs/architecture.md):

    {"changes":   [{"mailbox", "subscriptionId", "changeType"}],
     "lifecycle": [{"mailbox", "subscriptionId", "lifecycleEvent"}],
     "resync":    ["mailbox", ...],
     "windows":   [{"mailbox", "start", "end", "events": [basic event, ...]}]}

``changes``, ``lifecycle`` and ``resync`` are required (possibly empty), and so is every field
of a change, a lifecycle event, a window and a pushed event: the schema ``RelayNotification`` of
``connector/openapi.yaml``, which ``tests/intake/test_relay_schema.py`` holds this module to.
Unknown properties are ignored, except in a pushed event, which carries the basic fields only.

Everything is checked before anything is stored: the shape, every pushed event (strictly: dates,
order, ``showAs``), and that every mailbox named is a calendar of the path's tenant. Only then
are pushed windows applied (``replace_window``, for tenants whose source is ``push``) and the
rest committed to the inbox.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from bookingcache.contract.wire import WireEvent
from bookingcache.domain.events import BasicEvent, EventType, Sensitivity
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.errors import MalformedBody
from bookingcache.intake.fields import Mailbox, SubscriptionId
from bookingcache.intake.graph import describe

MAX_ITEMS = 10_000
MAX_EVENTS = 20_000
MAX_WINDOW = dt.timedelta(days=100)
_EARLIEST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
_LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)

_LIFECYCLE = {
    "missed": NotificationKind.MISSED,
    "subscriptionRemoved": NotificationKind.SUBSCRIPTION_REMOVED,
    "reauthorizationRequired": NotificationKind.REAUTHORIZATION_REQUIRED,
}


def _in_range(name: str, value: dt.datetime) -> None:
    if not _EARLIEST <= value < _LATEST:
        raise ValueError(f"{name} is outside the years 1970 to 2199")


_UTC_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)


def _utc_instant(value: Any) -> dt.datetime:
    if not isinstance(value, str) or _UTC_INSTANT.fullmatch(value) is None:
        raise ValueError("must be a UTC time as YYYY-MM-DDThh:mm:ssZ")
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# The contract's ``UtcInstant``: whole seconds, UTC, with ``Z``.
UtcInstant = Annotated[AwareDatetime, BeforeValidator(_utc_instant)]
# The contract's notification kinds (Graph's, for events).
ChangeType = Literal["created", "updated", "deleted"]
LifecycleEvent = Literal["missed", "subscriptionRemoved", "reauthorizationRequired"]


class PushedEvent(WireEvent):
    """A basic event pushed by the relay: the wire event with every basic field present and
    nothing else (the contract's ``BasicEvent``), its texts and dates bounded to what the store
    can hold."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    start: UtcInstant
    end: UtcInstant
    is_cancelled: bool = Field(alias="isCancelled")
    subject: str | None = Field(max_length=1024)
    sensitivity: Sensitivity
    type: EventType
    series_master_id: str | None = Field(alias="seriesMasterId", max_length=1024)

    @model_validator(mode="after")
    def _storable(self) -> Self:
        for name in ("id", "subject", "series_master_id"):
            value = getattr(self, name)
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} must not contain NUL characters")
        _in_range("start", self.start)
        _in_range("end", self.end)
        return self


class RelayChange(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    mailbox: Mailbox
    subscription_id: SubscriptionId = Field(alias="subscriptionId")
    change_type: ChangeType = Field(alias="changeType")


class RelayLifecycle(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    mailbox: Mailbox
    subscription_id: SubscriptionId = Field(alias="subscriptionId")
    lifecycle_event: LifecycleEvent = Field(alias="lifecycleEvent")


class RelayWindow(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    mailbox: Mailbox
    start: UtcInstant
    end: UtcInstant
    events: list[PushedEvent] = Field(max_length=MAX_EVENTS)

    @model_validator(mode="after")
    def _sane(self) -> Self:
        _in_range("start", self.start)
        _in_range("end", self.end)
        if self.end <= self.start:
            raise ValueError("the window must end after it starts")
        if self.end - self.start > MAX_WINDOW:
            raise ValueError(f"a window spans at most {MAX_WINDOW.days} days")
        seen: set[str] = set()
        for event in self.events:
            if event.id in seen:
                raise ValueError(f"event id {event.id!r} appears twice in the window")
            seen.add(event.id)
        return self

    def basic_events(self) -> list[BasicEvent]:
        return [event.to_event() for event in self.events]


class RelayCall(BaseModel):
    # Strict: JSON's types as the schema says them (no "true" for true, no 1 for "1").
    model_config = ConfigDict(extra="ignore", strict=True)

    changes: list[RelayChange] = Field(max_length=MAX_ITEMS)
    lifecycle: list[RelayLifecycle] = Field(max_length=MAX_ITEMS)
    resync: list[Mailbox] = Field(max_length=MAX_ITEMS)
    windows: list[RelayWindow] = Field(default_factory=list, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _one_window_per_mailbox(self) -> Self:
        seen: set[str] = set()
        for window in self.windows:
            key = window.mailbox.casefold()
            if key in seen:
                raise ValueError(f"the window of {window.mailbox!r} appears twice")
            seen.add(key)
        return self

    def mailboxes(self) -> list[str]:
        named = [c.mailbox for c in self.changes] + [x.mailbox for x in self.lifecycle]
        named += self.resync + [w.mailbox for w in self.windows]
        return list(dict.fromkeys(named))


class InvalidRelayCall(MalformedBody):
    """The body is JSON but not a valid relay call (422); carries pydantic's field errors."""

    def __init__(self, detail: str, errors: list[tuple[str, str, str]]) -> None:
        super().__init__(detail)
        self.errors = errors


def parse_call(body: bytes) -> RelayCall:
    """``MalformedBody`` for a body that is not JSON, ``InvalidRelayCall`` for one that is
    JSON of the wrong shape or with invalid values."""
    try:
        return RelayCall.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise MalformedBody("the body is not valid JSON") from exc
        fields = [
            (
                "body." + ".".join(str(part) for part in problem["loc"]),
                str(problem["msg"]),
                str(problem["type"]),
            )
            for problem in problems[:50]
        ]
        raise InvalidRelayCall(describe(exc), fields) from exc


def drop_unknown(call: RelayCall, known: dict[str, str]) -> tuple[list[str], int]:
    """Take out of ``call`` everything naming a mailbox that is not one of the tenant's
    calendars (``known``, as ``Store.calendar_names`` answers): a room unlinked
    since Graph notified, or a mailbox of another tenant. Such parts are acknowledged and
    ignored, as Alternative 1 ignores unknown subscriptions: refusing the call would make the
    relay send it again forever and hold back the rest of its backlog. Returns the unknown
    mailboxes (sorted, each once) and how many parts were dropped."""
    missing = sorted({mailbox for mailbox in call.mailboxes() if mailbox not in known})
    if not missing:
        return [], 0
    before = len(call.changes) + len(call.lifecycle) + len(call.resync) + len(call.windows)
    call.changes = [change for change in call.changes if change.mailbox in known]
    call.lifecycle = [event for event in call.lifecycle if event.mailbox in known]
    call.resync = [mailbox for mailbox in call.resync if mailbox in known]
    call.windows = [window for window in call.windows if window.mailbox in known]
    after = len(call.changes) + len(call.lifecycle) + len(call.resync) + len(call.windows)
    return missing, before - after


def inbox_items(call: RelayCall, *, tenant_id: str, known: dict[str, str]) -> list[InboxItem]:
    """The call's changes, lifecycle events and resyncs as inbox items, naming each calendar
    the way the service spells it."""
    items = [
        InboxItem(
            tenant_id=tenant_id,
            mailbox=known[change.mailbox],
            kind=NotificationKind.CHANGE,
            via="alt2",
            subscription_id=change.subscription_id,
            change_type=change.change_type,
        )
        for change in call.changes
    ]
    items += [
        InboxItem(
            tenant_id=tenant_id,
            mailbox=known[event.mailbox],
            kind=_LIFECYCLE[event.lifecycle_event],
            via="alt2",
            subscription_id=event.subscription_id,
        )
        for event in call.lifecycle
    ]
    items += [
        InboxItem(
            tenant_id=tenant_id,
            mailbox=known[mailbox],
            kind=NotificationKind.RESYNC,
            via="alt2",
        )
        for mailbox in dict.fromkeys(call.resync)
    ]
    return items
