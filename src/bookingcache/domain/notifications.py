"""Notifications as the service keeps them: each says a calendar is dirty, and why."""

from __future__ import annotations

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
