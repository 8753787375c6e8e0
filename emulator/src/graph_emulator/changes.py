"""The seam between the calendar store and notification delivery.

Every write to a mailbox's calendar (through the Graph API, the control API or the simulator)
reports each resulting Exchange-level change to a ``ChangeSink``. Room bookings produce Graph's
realistic burst (one ``created`` then several ``updated``), and a change to one occurrence is
reported on the series master: the caller of ``event_changed`` has already applied both rules, so
the sink only matches subscriptions, batches and delivers.
"""

from __future__ import annotations

from typing import Literal, Protocol

ChangeType = Literal["created", "updated", "deleted"]


class ChangeSink(Protocol):
    def event_changed(self, *, mailbox_id: str, event_id: str, change_type: ChangeType) -> None:
        """Must not block: delivery happens in the background."""
        ...


class NullSink:
    def event_changed(self, *, mailbox_id: str, event_id: str, change_type: ChangeType) -> None:
        return None
