"""What the queue accepts and hands out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class NotificationKind(StrEnum):
    """Why a calendar is dirty. ``change`` is any change notification (created, updated,
    deleted); the lifecycle kinds are Graph's; ``resync`` is a relay handing over a backlog."""

    CHANGE = "change"
    MISSED = "missed"
    SUBSCRIPTION_REMOVED = "subscriptionRemoved"
    REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
    RESYNC = "resync"

    @property
    def needs_full_resync(self) -> bool:
        return self in (
            NotificationKind.MISSED,
            NotificationKind.SUBSCRIPTION_REMOVED,
            NotificationKind.RESYNC,
        )

    @property
    def needs_refresh(self) -> bool:
        # Reauthorization is recorded for the subscription orchestration; the calendar itself
        # is not dirty until delivery actually pauses, which ends in ``missed`` or the sweep.
        return self is not NotificationKind.REAUTHORIZATION_REQUIRED


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One accepted notification, as intake hands it to the queue."""

    tenant_id: str
    mailbox: str | None
    kind: NotificationKind = NotificationKind.CHANGE
    via: Literal["alt1", "alt2"] = "alt1"
    subscription_id: str | None = None
    change_type: str | None = None
    payload: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed refresh of one calendar. ``lease`` identifies this claim (it is what the row's
    ``locked_by`` holds): a worker whose lease expired and was retaken can no longer complete,
    retry or release it. ``last_notified_at`` is the newest change notification the job stood
    for when it was claimed (None for a job no change notification asked for)."""

    id: int
    tenant_id: str
    mailbox: str
    full_resync: bool
    attempts: int
    lease: str
    locked_until: dt.datetime
    last_notified_at: dt.datetime | None = None
