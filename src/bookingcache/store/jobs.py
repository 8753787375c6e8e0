"""The job-queue port: at most one pending and one running refresh per calendar, claimed with
leases, so any number of workers on one database share the work.

``store.sql.jobs.SqlJobQueue`` fills it (docs/sync.md, "The queue").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bookingcache.errors import BookingCacheError
from bookingcache.store.duties import Lease

# Told the earliest due time among the jobs a commit created or moved (None: now, or unknown).
DueListener = Callable[[dt.datetime | None], None]


class ClaimLost(BookingCacheError):
    """A refresh's claim was taken over (its lease ran out, or its process was taken for dead)
    before the refresh wrote: the new claim's read is newer, so this one's is not written."""


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed refresh of one calendar. ``lease`` identifies this claim: a worker whose lease
    expired and was retaken can no longer complete, retry or release it. ``last_notified_at`` is
    the newest change notification the job stood for when it was claimed (None for a job no
    change notification asked for)."""

    id: int
    tenant_id: str
    mailbox: str
    full_resync: bool
    attempts: int
    lease: str
    locked_until: dt.datetime
    last_notified_at: dt.datetime | None = None


class JobQueue(Protocol):
    @property
    def lease_s(self) -> float: ...

    @property
    def max_attempts(self) -> int: ...

    @property
    def depth(self) -> int:
        """Unclaimed jobs as the last claim counted them."""
        ...

    @property
    def oldest_due(self) -> dt.datetime | None:
        """The earliest due time of the unclaimed jobs that were due, as the last claim found
        them waiting (beyond its batch, or behind their calendar's running refresh); None:
        none was."""
        ...

    @property
    def upcoming(self) -> dt.datetime | None:
        """After a claim: when the worker must look again by itself (the next job falling due,
        a held-back job's release, a lease running out); None: nothing is coming."""
        ...

    def add_listener(self, listener: DueListener) -> None:
        """``listener(due)`` after every commit in this process that created or moved a job."""
        ...

    def follow_other_processes(self) -> bool:
        """Also call the listeners when another process creates or moves a job, where the
        database announces it (PostgreSQL); False where workers must poll."""
        ...

    def stop_following(self) -> None: ...

    async def enqueue(
        self,
        calendars_due: Mapping[tuple[str, str], dt.datetime],
        *,
        full_resync: bool = False,
        fence: Lease | None = None,
    ) -> int:
        """Give each calendar a refresh due at the given time unless it already has a pending
        or running job. Returns how many jobs were created. With ``fence`` (a cluster duty's
        lease) nothing is written unless the lease still holds, compared in the same
        transaction (``store.duties.LeaseLost`` otherwise)."""
        ...

    async def request_refresh(
        self,
        calendars: Iterable[tuple[str, str]],
        *,
        due: dt.datetime,
        full_resync: bool = False,
    ) -> int:
        """Each calendar's refresh due at ``due`` at the latest, as a change notification asks
        for one: a pending job is pulled in (never later, and never inside a failure's
        backoff) and upgraded to a full resync when asked; a calendar whose refresh runs gets
        a pending job after it, since that read may have begun before what asks for this one.
        Calendars the service does not cache are left out. Returns how many got a job."""
        ...

    async def claim(
        self, worker_id: str, limit: int, *, exclude_tenants: Iterable[str] = ()
    ) -> list[Job]:
        """Up to ``limit`` due jobs, at most one per calendar and none for a calendar whose
        refresh runs elsewhere; each comes with a lease of ``lease_s``."""
        ...

    async def extend(self, job: Job) -> bool:
        """Renew the lease of a long refresh; False when the claim was lost."""
        ...

    async def complete(self, job: Job) -> bool:
        """The refresh succeeded: drop the claim. False when the lease was lost."""
        ...

    async def retry(self, job: Job, *, defer_s: float, error: str) -> bool:
        """The refresh failed: pending again ``defer_s`` from now with one more attempt; False
        when given up (after ``max_attempts``) or lost."""
        ...

    async def release(self, job: Job) -> bool:
        """Hand an unfinished job back (a graceful stop): due now, attempts unchanged."""
        ...

    async def busy_calendars(self) -> set[tuple[str, str]]:
        """Calendars with a pending or claimed job."""
        ...
