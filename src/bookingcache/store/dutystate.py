"""The state the cluster duties share through the database, so that whichever process holds a
duty carries on where the previous holder stopped: the silence duty's judgement of each calendar
and its place in the change feed, and each tenant's converge timing (the debounce of room
changes and of notifications from unknown subscriptions). ``store.sql.dutystate`` fills it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bookingcache.store.duties import Lease

Key = tuple[str, str]


@dataclass(slots=True)
class SilenceRecord:
    """The silence duty's judgement of one calendar (``orchestration.silence``)."""

    tenant_id: str
    mailbox: str
    baseline: dt.datetime
    unannounced: int = 0
    silent_since: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ConvergeTimes:
    last_at: dt.datetime | None
    due_at: dt.datetime | None


class DutyState(Protocol):
    # --- silence ---------------------------------------------------------------------------
    async def silence_records(self) -> dict[Key, SilenceRecord]: ...

    async def silence_cursor(self) -> int | None:
        """The change feed position the silence duty judged up to; None: never ran."""
        ...

    async def save_silence(
        self, records: Sequence[SilenceRecord], *, cursor: int, lease: Lease | None
    ) -> None:
        """Write the judgements and the feed position in one transaction, only while
        ``lease`` holds (``store.duties.LeaseLost`` otherwise; None: unfenced)."""
        ...

    async def clear_silence(self, tenant_id: str, mailbox: str) -> None:
        """A notification arrived after the calendar fell silent: it is silent no longer."""
        ...

    async def forget_silence(self, tenant_id: str, mailbox: str) -> None: ...

    # --- converge timing -------------------------------------------------------------------
    async def request_converge(
        self,
        tenant_id: str,
        due_at: dt.datetime,
        *,
        restart: bool,
        after_last_s: float | None = None,
    ) -> None:
        """A converge of the tenant is due at ``due_at`` (and, with ``after_last_s``, no sooner
        than that long after its last converge, judged in the same transaction): the earlier of
        it and one already due, or exactly it with ``restart`` (a new room change restarts the
        debounce). Unknown tenants are left out."""
        ...

    async def converge_times(self) -> dict[str, ConvergeTimes]: ...

    async def converged(self, tenant_id: str, at: dt.datetime) -> None:
        """A converge of the tenant began at ``at``: it is its last, and a request due by then
        is served."""
        ...

    async def forget_converges(self, tenant_id: str) -> None: ...
