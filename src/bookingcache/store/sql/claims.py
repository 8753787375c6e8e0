"""Claiming refresh jobs, inside the write transaction ``SqlJobQueue.claim`` runs.

A claim takes due pending jobs of calendars with no live claim, and claimed jobs whose lease ran
out (their worker died). A due job whose newest change notification is younger than the gather
delay (``coalesce_s``) is held back while the notifications keep coming, at most
``coalesce_window_s`` after the job was created, so a stream of notifications within that window
gives one refresh. On PostgreSQL the calendar rows are locked ``FOR UPDATE SKIP LOCKED`` before
the running check, so two workers can never claim one calendar; on SQLite the claim is one
``BEGIN IMMEDIATE`` transaction (the store's write path), which is the single-writer
equivalent.

The same transaction records each claimed calendar's newest change notification on its
subscription, and finds when the worker must look again by itself.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.store.jobs import Job
from bookingcache.store.sql import subscriptions
from bookingcache.store.sql.rows import as_utc
from bookingcache.store.sql.schema import calendars, jobs

REFRESH = "refresh"
FULL_RESYNC = "full_resync"

# Another row of the same calendar, for "is its refresh running?" subqueries. Built once: an
# alias builds its column collection on first use, which costs more than the query itself.
_RUNNING = jobs.alias("running")


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker asks for, and the queue's timing."""

    worker_id: str
    limit: int
    excluded: Sequence[str]
    now: dt.datetime
    coalesce_s: float
    coalesce_window_s: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class Claimed:
    jobs: list[Job]
    # When the first job held back for its notifications becomes claimable.
    held_until: dt.datetime | None
    # Unclaimed jobs left, and when the worker must look again by itself.
    depth: int
    upcoming: dt.datetime | None
    # The earliest due time of the unclaimed jobs already due (None: none is), whose age is
    # how long the oldest waits.
    oldest_due: dt.datetime | None = None


# The claim's statements are built once per shape and run with their values: building one
# (its subqueries, comparisons and their coercions) costs far more than running it, and a busy
# worker claims up to every ``claim_gap_ms``.
_NOW = sa.bindparam("now", type_=jobs.c.due_at.type)


def _live_claim(*, besides_own_row: bool = False) -> sa.Exists:
    """Whether the calendar of the ``jobs`` row at hand is being refreshed: a claim of it
    whose lease still runs at ``:now`` (by another row than this one, with
    ``besides_own_row``)."""
    running = _RUNNING
    conditions = [
        running.c.tenant_id == jobs.c.tenant_id,
        running.c.mailbox == jobs.c.mailbox,
        running.c.locked_by.is_not(None),
        running.c.locked_until >= _NOW,
    ]
    if besides_own_row:
        conditions.append(running.c.id != jobs.c.id)
    return sa.select(running.c.id).where(*conditions).exists()


@functools.cache
def _upcoming() -> sa.Select[Any]:
    """One statement: the earliest due time after ``:now`` of a pending job whose calendar is
    not being refreshed, the earliest lease to run out, how many jobs are pending, and the
    earliest due time of the pending jobs due by ``:now``."""
    pending = [jobs.c.locked_by.is_(None), ~_live_claim(), jobs.c.due_at > _NOW]
    earliest_due = sa.select(sa.func.min(jobs.c.due_at)).where(*pending).scalar_subquery()
    earliest_lease = (
        sa.select(sa.func.min(jobs.c.locked_until))
        .where(jobs.c.locked_by.is_not(None))
        .scalar_subquery()
    )
    waiting = (
        sa.select(sa.func.count())
        .select_from(jobs)
        .where(jobs.c.locked_by.is_(None))
        .scalar_subquery()
    )
    oldest_due = (
        sa.select(sa.func.min(jobs.c.due_at))
        .where(jobs.c.locked_by.is_(None), jobs.c.due_at <= _NOW)
        .scalar_subquery()
    )
    return sa.select(earliest_due, earliest_lease, waiting, oldest_due)


def _lease(worker_id: str) -> str:
    # locked_by holds "<worker>/<claim>": the worker for people, the claim id for fencing.
    return f"{worker_id[:150]}/{uuid.uuid4().hex}"


@functools.cache
def _candidates(postgres: bool, excluding: bool) -> sa.Select[Any]:
    """The claimable jobs at ``:now``, ``:fetch`` at most, of tenants not in ``:excluded``
    (with ``excluding``)."""
    live_claim = _live_claim(besides_own_row=True)
    claimable = sa.or_(
        sa.and_(jobs.c.locked_by.is_(None), jobs.c.due_at <= _NOW, ~live_claim),
        sa.and_(jobs.c.locked_by.is_not(None), jobs.c.locked_until < _NOW, ~live_claim),
    )
    query = sa.select(
        jobs.c.id,
        jobs.c.tenant_id,
        jobs.c.mailbox,
        jobs.c.kind,
        jobs.c.attempts,
        jobs.c.locked_by,
        jobs.c.created_at,
        jobs.c.last_notified_at,
    ).where(claimable)
    if excluding:
        query = query.where(jobs.c.tenant_id.not_in(sa.bindparam("excluded", expanding=True)))
    query = query.order_by(jobs.c.due_at, jobs.c.id).limit(sa.bindparam("fetch"))
    if postgres:
        query = query.with_for_update(of=jobs, skip_locked=True)
    return query


_TAKE = (
    sa.update(jobs)
    .where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(
        locked_by=sa.bindparam("lease", type_=jobs.c.locked_by.type),
        locked_until=sa.bindparam("until", type_=jobs.c.locked_until.type),
    )
)


def claim(connection: Connection, claiming: Claim) -> Claimed:
    now = claiming.now
    postgres = connection.dialect.name == "postgresql"
    quiet_since = now - dt.timedelta(seconds=claiming.coalesce_s)
    window = dt.timedelta(seconds=claiming.coalesce_window_s)
    holding = claiming.coalesce_window_s > claiming.coalesce_s
    values: dict[str, Any] = {"now": now, "fetch": claiming.limit * 2}
    if claiming.excluded:
        values["excluded"] = list(claiming.excluded)
    # Over-fetch: two candidates of one calendar (a dead claim and a pending job) collapse.
    candidates = connection.execute(_candidates(postgres, bool(claiming.excluded)), values).all()
    chosen: dict[tuple[str, str], Any] = {}
    held: list[dt.datetime] = []
    for row in candidates:
        key = (row.tenant_id, row.mailbox)
        if holding and row.locked_by is None and row.last_notified_at is not None:
            # Notifications still arriving: gather them, within the window.
            last = as_utc(row.last_notified_at)
            created = as_utc(row.created_at)
            if last > quiet_since and created + window > now:
                held.append(min(last + (now - quiet_since), created + window))
                continue
        chosen.setdefault(key, row)
        if len(chosen) >= claiming.limit:
            break
    held_until = min(held) if held else None
    if postgres and chosen:
        chosen = _lock_calendars(connection, chosen, now=now)
    claimed: list[Job] = []
    folded: dict[tuple[str, str], tuple[bool, dt.datetime | None]] = {}
    if chosen:
        folded = _fold_siblings(connection, chosen, now=now, postgres=postgres)
        until = now + dt.timedelta(seconds=claiming.lease_s)
        # One lease per claim: (id, lease) fences each job of the batch.
        lease = _lease(claiming.worker_id)
        connection.execute(
            _TAKE, {"ids": [row.id for row in chosen.values()], "lease": lease, "until": until}
        )
        notified: dict[tuple[str, str], dt.datetime] = {}
        for key, row in chosen.items():
            times = [as_utc(row.last_notified_at)] if row.last_notified_at is not None else []
            if key in folded and folded[key][1] is not None:
                times.append(as_utc(folded[key][1]))
            if times:
                notified[key] = max(times)
        subscriptions.note_notifications(connection, notified)
        claimed = [
            Job(
                id=row.id,
                tenant_id=tenant,
                mailbox=mailbox,
                full_resync=row.kind == FULL_RESYNC or folded.get((tenant, mailbox), (False,))[0],
                attempts=row.attempts,
                lease=lease,
                locked_until=until,
                last_notified_at=notified.get((tenant, mailbox)),
            )
            for (tenant, mailbox), row in chosen.items()
        ]
    depth, upcoming, oldest_due = _look_ahead(connection, now, held_until)
    return Claimed(
        jobs=claimed,
        held_until=held_until,
        depth=depth,
        upcoming=upcoming,
        oldest_due=oldest_due,
    )


def _look_ahead(
    connection: Connection, now: dt.datetime, held_until: dt.datetime | None
) -> tuple[int, dt.datetime | None, dt.datetime | None]:
    """How many jobs wait; when the worker must look again by itself: the earliest pending
    job falling due later, a held-back job's release, or a lease running out (jobs due now
    that the claim left are either beyond its limit or wait for a refresh to end, which the
    worker hears of anyway); and the earliest due time of the jobs due that wait."""
    due, lease, count, oldest = (connection.execute(_upcoming(), {"now": now})).one()
    values = [as_utc(value) for value in (due, lease) if value is not None]
    if held_until is not None:
        values.append(held_until)
    oldest_due = as_utc(oldest) if oldest is not None else None
    return int(count or 0), (min(values) if values else None), oldest_due


def _lock_calendars(
    connection: Connection, chosen: dict[tuple[str, str], Any], *, now: dt.datetime
) -> dict[tuple[str, str], Any]:
    """PostgreSQL: take the chosen calendars' row locks (skipping ones another claimer holds),
    then re-check with a fresh snapshot that no live claim appeared meanwhile. Two statements
    for the whole batch: the claim holds its job rows locked meanwhile, and intake's upserts
    of those rows wait for it."""
    keys = list(chosen)
    locked = connection.execute(
        sa.select(calendars.c.tenant_id, calendars.c.mailbox)
        .where(sa.tuple_(calendars.c.tenant_id, calendars.c.mailbox).in_(keys))
        .with_for_update(skip_locked=True)
    )
    mine = {(row.tenant_id, row.mailbox) for row in locked}
    if not mine:
        return {}
    live = connection.execute(
        sa.select(jobs.c.tenant_id, jobs.c.mailbox, jobs.c.id).where(
            sa.tuple_(jobs.c.tenant_id, jobs.c.mailbox).in_(list(mine)),
            jobs.c.locked_by.is_not(None),
            jobs.c.locked_until >= now,
        )
    )
    busy = {
        (row.tenant_id, row.mailbox)
        for row in live
        if row.id != chosen[(row.tenant_id, row.mailbox)].id
    }
    return {key: row for key, row in chosen.items() if key in mine and key not in busy}


def _fold_siblings(
    connection: Connection,
    chosen: dict[tuple[str, str], Any],
    *,
    now: dt.datetime,
    postgres: bool,
) -> dict[tuple[str, str], tuple[bool, dt.datetime | None]]:
    """A claimed calendar's other unclaimable-elsewhere rows (its pending job beside a dead
    claim being taken over, or the dead claim beside its pending job) are folded into the claim
    and deleted: the one read covers what each asked for, and the calendar is read once, not
    twice. What they asked for: (a full resync, their newest notification) per calendar."""
    keys = list(chosen)
    query = sa.select(
        jobs.c.id, jobs.c.tenant_id, jobs.c.mailbox, jobs.c.kind, jobs.c.last_notified_at
    ).where(
        sa.tuple_(jobs.c.tenant_id, jobs.c.mailbox).in_(keys),
        jobs.c.id.not_in([row.id for row in chosen.values()]),
        sa.or_(jobs.c.locked_by.is_(None), jobs.c.locked_until < now),
    )
    if postgres:
        # A row intake is upserting stays (it becomes the calendar's next refresh).
        query = query.with_for_update(skip_locked=True)
    siblings = connection.execute(query).all()
    if not siblings:
        return {}
    folded: dict[tuple[str, str], tuple[bool, dt.datetime | None]] = {}
    for row in siblings:
        key = (row.tenant_id, row.mailbox)
        full, newest = folded.get(key, (False, None))
        notified = as_utc(row.last_notified_at) if row.last_notified_at is not None else None
        if notified is not None and (newest is None or notified > newest):
            newest = notified
        folded[key] = (full or row.kind == FULL_RESYNC, newest)
    connection.execute(sa.delete(jobs).where(jobs.c.id.in_([row.id for row in siblings])))
    if any(full for full, _ in folded.values()):
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_([chosen[key].id for key, (full, _) in folded.items() if full]))
            .values(kind=FULL_RESYNC)
        )
    return folded
