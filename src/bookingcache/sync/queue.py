"""The durable inbox and the coalescing refresh-job queue, over the store's ``inbox_batches``
and ``jobs`` tables (one behaviour on SQLite and PostgreSQL).

Intake stores what it accepted as one inbox row per commit round and tenant and source (the
record), and in the same transaction makes every calendar it names dirty through that
calendar's job (the work): whether a notification was processed is whether its job is done.

A calendar has at most one *pending* job (``locked_by IS NULL``; a unique index holds it) and at
most one *claimed* job. Accepting notifications for a calendar creates its pending job due after
the short gather delay (``coalesce_s``), or keeps the existing one, only ever pulling it earlier
and recording on it the time of the newest change notification; a notification that arrives
while the calendar's refresh runs lands in a new pending job, which cannot be claimed before
the running one ends, so it causes exactly one more refresh.

Claiming takes due pending jobs of calendars with no live claim, and claimed jobs whose lease
ran out (their worker died). A due job whose newest change notification is younger than the
gather delay is held back while the notifications keep coming, at most ``coalesce_window_s``
after the job was created, so a stream of notifications within that window gives one refresh.
On PostgreSQL the calendar rows are locked ``FOR UPDATE SKIP LOCKED`` before the running check,
so two workers can never claim one calendar; on SQLite the claim is one ``BEGIN IMMEDIATE``
transaction (the store's write path), which is the single-writer equivalent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bookingcache.clock import Clock
from bookingcache.store import notices
from bookingcache.store.schema import (
    calendars,
    inbox_batches,
    jobs,
    subscriptions,
)
from bookingcache.store.sql import SqlStore
from bookingcache.sync import lifecycle
from bookingcache.sync.model import InboxItem, Job, NotificationKind

log = logging.getLogger(__name__)

REFRESH = "refresh"
FULL_RESYNC = "full_resync"
_MAX_KEY = 320
T = TypeVar("T")


# Another row of the same calendar, for "is its refresh running?" subqueries. Built once: an
# alias builds its column collection on first use, which costs more than the query itself.
_RUNNING = jobs.alias("running")


def _live_claim(now: dt.datetime, *, besides_own_row: bool = False) -> sa.Exists:
    """Whether the calendar of the ``jobs`` row at hand is being refreshed: a claim of it
    whose lease still runs (by another row than this one, with ``besides_own_row``)."""
    running = _RUNNING
    conditions = [
        running.c.tenant_id == jobs.c.tenant_id,
        running.c.mailbox == jobs.c.mailbox,
        running.c.locked_by.is_not(None),
        running.c.locked_until >= now,
    ]
    if besides_own_row:
        conditions.append(running.c.id != jobs.c.id)
    return sa.select(running.c.id).where(*conditions).exists()


def _upcoming(now: dt.datetime) -> sa.Select[Any]:
    """One statement: the earliest due time after ``now`` of a pending job whose calendar is
    not being refreshed, the earliest lease to run out, and how many jobs are pending."""
    pending = [jobs.c.locked_by.is_(None), ~_live_claim(now), jobs.c.due_at > now]
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
    return sa.select(earliest_due, earliest_lease, waiting)


def _lease(worker_id: str) -> str:
    # locked_by holds "<worker>/<claim>": the worker for people, the claim id for fencing.
    return f"{worker_id[:150]}/{uuid.uuid4().hex}"


class JobQueue:
    def __init__(
        self,
        store: SqlStore,
        *,
        clock: Clock,
        coalesce_s: float = 0.2,
        coalesce_window_s: float | None = None,
        lease_s: float = 60.0,
        max_attempts: int = 8,
    ) -> None:
        self._store = store
        self._clock = clock
        # A notification makes its calendar's refresh due ``coalesce_s`` later; while further
        # notifications keep arriving less than ``coalesce_s`` apart the claim holds the job
        # back, for at most ``coalesce_window_s`` after the job was created.
        self.coalesce_s = coalesce_s
        self.coalesce_window_s = max(coalesce_s, coalesce_window_s or 0.0)
        # After a claim that held jobs back: when the first of them becomes claimable.
        self.held_until: dt.datetime | None = None
        # Unclaimed jobs as the last claim counted them (the queue-depth metric), and when it
        # found the next job falling due (see ``_look_ahead``).
        self.depth = 0
        self.upcoming: dt.datetime | None = None
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._listeners: list[Callable[[dt.datetime | None], None]] = []
        self._following = False
        self._completions: list[tuple[Job, asyncio.Future[bool]]] = []
        self._completer: asyncio.Task[None] | None = None
        self._upsert: Any = None

    # --- plumbing ----------------------------------------------------------------------------
    def follow_other_processes(self) -> bool:
        """Also call the listeners when another process's transaction creates or moves a job
        (PostgreSQL's notices, ``store.notices``), and once whenever the listening (re)starts;
        False where there are no notices (SQLite: the worker's poll finds them)."""
        if self._following:
            return True
        self._following = self._store.listen(
            notices.JOBS_CHANNEL, self._on_notice, on_connect=self._notify
        )
        return self._following

    def stop_following(self) -> None:
        if self._following:
            self._store.unlisten(notices.JOBS_CHANNEL, self._on_notice)
            self._following = False

    def _on_notice(self, detail: str) -> None:
        try:
            due: dt.datetime | None = dt.datetime.fromisoformat(detail)
        except ValueError:
            due = None
        self._notify(due)

    def _committed(self, due: dt.datetime | None = None) -> None:
        """A commit created or moved a job (due at ``due``; None: now): tell this process's
        listeners, and other processes' (PostgreSQL)."""
        self._notify(due)
        self._store.announce(notices.JOBS_CHANNEL, "" if due is None else _utc_text(due))

    def add_listener(self, listener: Callable[[dt.datetime | None], None]) -> None:
        """``listener(due)`` is called after every commit that created or moved a job (same
        process), with the earliest due time among them (None: due now or not known)."""
        self._listeners.append(listener)

    def _notify(self, due: dt.datetime | None = None) -> None:
        for listener in self._listeners:
            listener(due)

    @property
    def _postgres(self) -> bool:
        return self._store.dialect == "postgresql"

    def _insert(self) -> Any:
        return self._insert_into(jobs)

    def _insert_into(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    def _job_upsert(self) -> Any:
        """``_append_rows``'s upsert of a calendar's pending job, built once: its ``excluded``
        namespace builds a column collection, which costs more than the statement's run."""
        if self._upsert is None:
            statement = self._insert()
            self._upsert = statement.on_conflict_do_update(
                index_elements=["tenant_id", "mailbox"],
                index_where=jobs.c.locked_by.is_(None),
                set_={
                    # Never later than the new due time, unless the job is backing off after
                    # a failure (attempts > 0), whose Retry-After/backoff must be honoured.
                    "due_at": sa.case(
                        (
                            sa.and_(
                                jobs.c.attempts == 0, jobs.c.due_at > statement.excluded.due_at
                            ),
                            statement.excluded.due_at,
                        ),
                        else_=jobs.c.due_at,
                    ),
                    # A full resync request upgrades the job.
                    "kind": sa.case(
                        (statement.excluded.kind == FULL_RESYNC, FULL_RESYNC), else_=jobs.c.kind
                    ),
                    "last_notified_at": sa.func.coalesce(
                        statement.excluded.last_notified_at, jobs.c.last_notified_at
                    ),
                },
            )
        return self._upsert

    # --- intake ------------------------------------------------------------------------------
    async def append_inbox(
        self, items: Sequence[InboxItem], *, received_at: dt.datetime | None = None
    ) -> int:
        """Store a batch of accepted notifications and enqueue their refreshes, all in ONE
        transaction: when this returns, every item is durable. The items become one inbox row
        per tenant and source; each calendar they name that the service caches gets its
        pending refresh job (created, or pulled earlier, upgraded to a full resync, and given
        the time of its newest change notification). Returns how many calendars got one.

        ``received_at`` is when the newest of the items arrived (default: now)."""
        if not items:
            return 0
        now = self._clock.now()
        received = now if received_at is None else min(received_at, now)
        async with self._store.write() as connection:
            lifecycle_items = any(needs_lifecycle(item) for item in items)
            if lifecycle_items:
                items = await lifecycle.resolve_mailboxes(connection, items)
            enqueued = await connection.run_sync(self._append_rows, items, received, now)
            if lifecycle_items:
                # Marked at the time they are stored, not when they arrived: a converge that
                # started in between could not see them, and must not clear them.
                await lifecycle.record(connection, items, now=now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("inbox: %d notifications, %d calendars to refresh", len(items), enqueued)
        if enqueued:
            self._committed(max(now, received + dt.timedelta(seconds=self.coalesce_s)))
        return enqueued

    def _append_rows(
        self,
        connection: Connection,
        resolved: Sequence[InboxItem],
        received: dt.datetime,
        now: dt.datetime,
    ) -> int:
        wanted, changed, batches = _sort(resolved)
        known = self._known(connection, wanted)
        connection.execute(
            inbox_batches.insert(),
            [
                {
                    "tenant_id": tenant,
                    "received_at": received,
                    "source": source,
                    "count": len(entries),
                    "notifications": entries,
                }
                for (tenant, source), entries in batches.items()
            ],
        )
        targets = {key: full for key, full in wanted.items() if key in known}
        if not targets:
            return 0
        due = received + dt.timedelta(seconds=self.coalesce_s)
        statement = self._job_upsert()
        connection.execute(
            statement,
            [
                _job_row(key, full, due, now, notified=received if key in changed else None)
                for key, full in targets.items()
            ],
        )
        return len(targets)

    async def enqueue(
        self,
        calendars_due: dict[tuple[str, str], dt.datetime],
        *,
        full_resync: bool = False,
    ) -> int:
        """Give each calendar a refresh due at the given time unless it already has a pending
        or running job (the sweep's path). Returns how many jobs were created."""
        if not calendars_due:
            return 0
        now = self._clock.now()
        async with self._store.write() as connection:
            busy = await self._busy(connection, calendars_due.keys())
            todo = {
                key: (due, full_resync) for key, due in calendars_due.items() if key not in busy
            }
            created = await connection.run_sync(lambda sync: self._enqueue(sync, todo, now=now))
        if created:
            self._committed(min(due for due, _ in todo.values()))
        return created

    async def _busy(
        self, connection: AsyncConnection, keys: Iterable[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        tenants = {tenant for tenant, _ in keys}
        rows = await connection.execute(
            sa.select(jobs.c.tenant_id, jobs.c.mailbox).where(jobs.c.tenant_id.in_(tenants))
        )
        return {(row.tenant_id, row.mailbox) for row in rows}

    def _known(
        self, connection: Connection, wanted: Iterable[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """The calendars among ``wanted`` that the service caches (jobs reference them)."""
        known: set[tuple[str, str]] = set()
        for tenant, mailboxes in _by_tenant(wanted).items():
            for chunk in _chunks(mailboxes):
                rows = connection.execute(
                    sa.select(calendars.c.mailbox).where(
                        calendars.c.tenant_id == tenant, calendars.c.mailbox.in_(chunk)
                    )
                )
                known.update((tenant, row.mailbox) for row in rows)
        return known

    def _enqueue(
        self,
        connection: Connection,
        wanted: dict[tuple[str, str], tuple[dt.datetime, bool]],
        *,
        now: dt.datetime,
    ) -> int:
        if not wanted:
            return 0
        known = self._known(connection, wanted)
        targets = {key: value for key, value in wanted.items() if key in known}
        if not targets:
            return 0
        rows = [_job_row(key, full, due, now) for key, (due, full) in targets.items()]
        statement = self._insert().on_conflict_do_nothing(
            index_elements=["tenant_id", "mailbox"],
            index_where=jobs.c.locked_by.is_(None),
        )
        inserted = connection.execute(statement.values(rows))
        return max(inserted.rowcount or 0, 0)

    # --- workers -----------------------------------------------------------------------------
    async def claim(
        self, worker_id: str, limit: int, *, exclude_tenants: Iterable[str] = ()
    ) -> list[Job]:
        """Up to ``limit`` due jobs, at most one per calendar and none for a calendar whose
        refresh is running elsewhere; each comes with a lease of ``lease_s``."""
        if limit <= 0:
            return []
        now = self._clock.now()
        excluded = list(set(exclude_tenants))
        live_claim = _live_claim(now, besides_own_row=True)
        claimable = sa.or_(
            sa.and_(jobs.c.locked_by.is_(None), jobs.c.due_at <= now, ~live_claim),
            sa.and_(jobs.c.locked_by.is_not(None), jobs.c.locked_until < now, ~live_claim),
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
        if excluded:
            query = query.where(jobs.c.tenant_id.not_in(excluded))
        # Over-fetch: two candidates of one calendar (a dead claim and a pending job) collapse.
        query = query.order_by(jobs.c.due_at, jobs.c.id).limit(limit * 2)
        if self._postgres:
            query = query.with_for_update(of=jobs, skip_locked=True)

        quiet_since = now - dt.timedelta(seconds=self.coalesce_s)
        window = dt.timedelta(seconds=self.coalesce_window_s)
        holding = self.coalesce_window_s > self.coalesce_s

        async def claim_in(connection: AsyncConnection) -> list[Job]:
            candidates = (await connection.execute(query)).all()
            chosen: dict[tuple[str, str], Any] = {}
            held: list[dt.datetime] = []
            for row in candidates:
                key = (row.tenant_id, row.mailbox)
                if holding and row.locked_by is None and row.last_notified_at is not None:
                    # Notifications still arriving: gather them, within the window.
                    last = _as_utc(row.last_notified_at)
                    created = _as_utc(row.created_at)
                    if last > quiet_since and created + window > now:
                        held.append(min(last + (now - quiet_since), created + window))
                        continue
                chosen.setdefault(key, row)
                if len(chosen) >= limit:
                    break
            self.held_until = min(held) if held else None
            if self._postgres and chosen:
                chosen = await self._lock_calendars(connection, chosen, now=now)
            claimed: list[Job] = []
            if not chosen:
                await self._look_ahead(connection, now)
                return claimed
            until = now + dt.timedelta(seconds=self.lease_s)
            # One lease per claim: (id, lease) fences each job of the batch.
            lease = _lease(worker_id)
            await connection.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_([row.id for row in chosen.values()]))
                .values(locked_by=lease, locked_until=until)
            )
            notified = [
                {"t": tenant, "m": mailbox, "at": _as_utc(row.last_notified_at)}
                for (tenant, mailbox), row in chosen.items()
                if row.last_notified_at is not None
            ]
            if notified:
                # The subscription's record of its calendar's newest change notification.
                await connection.execute(
                    sa.update(subscriptions)
                    .where(
                        subscriptions.c.tenant_id == sa.bindparam("t"),
                        subscriptions.c.mailbox == sa.bindparam("m"),
                        sa.or_(
                            subscriptions.c.last_notification_at.is_(None),
                            subscriptions.c.last_notification_at < sa.bindparam("at"),
                        ),
                    )
                    .values(last_notification_at=sa.bindparam("at")),
                    notified,
                )
            for (tenant, mailbox), row in chosen.items():
                claimed.append(
                    Job(
                        id=row.id,
                        tenant_id=tenant,
                        mailbox=mailbox,
                        full_resync=row.kind == FULL_RESYNC,
                        attempts=row.attempts,
                        lease=lease,
                        locked_until=until,
                        last_notified_at=(
                            _as_utc(row.last_notified_at) if row.last_notified_at else None
                        ),
                    )
                )
            await self._look_ahead(connection, now)
            return claimed

        async with self._store.write() as connection:
            return await claim_in(connection)

    async def _look_ahead(self, connection: AsyncConnection, now: dt.datetime) -> None:
        """After a claim, in its transaction: when the worker must look again by itself
        (``upcoming``): the earliest pending job falling due later, a held-back job's release,
        or a lease running out; jobs due now that the claim left are either beyond its limit
        or wait for a refresh to end, which the worker hears of anyway."""
        due, lease, count = (await connection.execute(_upcoming(now))).one()
        self.depth = int(count or 0)
        values = [_as_utc(value) for value in (due, lease) if value is not None]
        if self.held_until is not None:
            values.append(self.held_until)
        self.upcoming = min(values) if values else None

    async def _lock_calendars(
        self, connection: AsyncConnection, chosen: dict[tuple[str, str], Any], *, now: dt.datetime
    ) -> dict[tuple[str, str], Any]:
        """PostgreSQL: take the chosen calendars' row locks (skipping ones another claimer
        holds), then re-check with a fresh snapshot that no live claim appeared meanwhile.
        Two statements for the whole batch: the claim holds its job rows locked meanwhile,
        and intake's upserts of those rows wait for it."""
        keys = list(chosen)
        locked = await connection.execute(
            sa.select(calendars.c.tenant_id, calendars.c.mailbox)
            .where(sa.tuple_(calendars.c.tenant_id, calendars.c.mailbox).in_(keys))
            .with_for_update(skip_locked=True)
        )
        mine = {(row.tenant_id, row.mailbox) for row in locked}
        if not mine:
            return {}
        live = await connection.execute(
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

    def _mine(self, job: Job) -> Any:
        return sa.and_(jobs.c.id == job.id, jobs.c.locked_by == job.lease)

    async def extend(self, job: Job) -> bool:
        """Renew the lease of a long refresh; False when the claim was lost."""
        until = self._clock.now() + dt.timedelta(seconds=self.lease_s)

        async def extend_in(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                sa.update(jobs).where(self._mine(job)).values(locked_until=until)
            )
            return (result.rowcount or 0) > 0

        async with self._store.write() as connection:
            return await extend_in(connection)

    async def complete(self, job: Job) -> bool:
        """The refresh succeeded: drop the claim (what its notifications asked for is done).
        False (and no change) when the lease was lost to another worker.

        Completions are group-committed: while one transaction runs, the completions that
        arrive meanwhile wait and go together in the next one, so a busy worker spends one
        write per round instead of one per refresh."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._completions.append((job, future))
        if self._completer is None or self._completer.done():
            self._completer = asyncio.create_task(self._complete_waiting())
        return await future

    async def _complete_waiting(self) -> None:
        while self._completions:
            batch, self._completions = self._completions, []
            try:
                done = await self._complete_many([job for job, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for job, future in batch:
                    if not future.done():
                        future.set_result(job.id in done)

    async def _complete_many(self, batch: Sequence[Job]) -> set[int]:
        async def complete_in(connection: AsyncConnection) -> set[int]:
            deleted = await connection.execute(
                sa.delete(jobs)
                .where(sa.tuple_(jobs.c.id, jobs.c.locked_by).in_([(j.id, j.lease) for j in batch]))
                .returning(jobs.c.id)
            )
            return {row[0] for row in deleted}

        async with self._store.write() as connection:
            return await complete_in(connection)

    async def retry(self, job: Job, *, defer_s: float, error: str) -> bool:
        """The refresh failed: make it pending again ``defer_s`` from now with one more attempt.
        After ``max_attempts`` the job is dropped (the calendar keeps its recorded error and the
        sweep or the next notification tries again). Returns False when given up or lost."""
        attempts = job.attempts + 1
        due = self._clock.now() + dt.timedelta(seconds=max(0.0, defer_s))
        give_up = attempts >= self.max_attempts
        return await self._unclaim(
            job, due=due, attempts=attempts, error=error[:2000], give_up=give_up
        )

    async def release(self, job: Job) -> bool:
        """Hand an unfinished job back (graceful stop): due now, attempts unchanged."""
        return await self._unclaim(
            job, due=self._clock.now(), attempts=job.attempts, error=None, give_up=False
        )

    async def _unclaim(
        self, job: Job, *, due: dt.datetime, attempts: int, error: str | None, give_up: bool
    ) -> bool:
        kind = FULL_RESYNC if job.full_resync else REFRESH
        async with self._store.write() as connection:
            owned = await connection.scalar(sa.select(jobs.c.id).where(self._mine(job)))
            if owned is None:
                return False
            if give_up:
                await connection.execute(sa.delete(jobs).where(jobs.c.id == job.id))
                return False
            pending = (
                await connection.execute(
                    sa.select(jobs.c.id, jobs.c.due_at, jobs.c.kind).where(
                        jobs.c.tenant_id == job.tenant_id,
                        jobs.c.mailbox == job.mailbox,
                        jobs.c.locked_by.is_(None),
                    )
                )
            ).first()
            if pending is None:
                await connection.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job.id)
                    .values(
                        locked_by=None,
                        locked_until=None,
                        due_at=due,
                        attempts=attempts,
                        kind=kind,
                        last_error=error,
                    )
                )
            else:
                # A notification arrived meanwhile: fold this job into the pending one, keeping
                # the later due time (a backoff must not be cut short) and the stronger kind.
                await connection.execute(sa.delete(jobs).where(jobs.c.id == job.id))
                await connection.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == pending.id)
                    .values(
                        due_at=max(pending.due_at, due),
                        attempts=attempts,
                        kind=FULL_RESYNC if job.full_resync else pending.kind,
                        last_error=error,
                    )
                )
        self._committed()
        return True

    # --- retention ---------------------------------------------------------------------------
    async def prune_inbox(
        self, received_before: dt.datetime, *, chunk: int = 1000, max_chunks: int = 20
    ) -> int:
        """Delete the inbox rows received before ``received_before``, oldest first, up to
        ``max_chunks`` transactions of ``chunk`` rows; returns how many went. Rows are read in
        id order, which is arrival order, and the pass stops at the first younger row, so it
        never scans the inbox for old rows that are not there."""
        deleted = 0
        for _ in range(max_chunks):

            async def prune_in(connection: AsyncConnection) -> int:
                rows = await connection.execute(
                    sa.select(inbox_batches.c.id, inbox_batches.c.received_at)
                    .order_by(inbox_batches.c.id)
                    .limit(chunk)
                )
                old: list[int] = []
                for row in rows:
                    if _as_utc(row.received_at) >= received_before:
                        break
                    old.append(row.id)
                if old:
                    await connection.execute(
                        sa.delete(inbox_batches).where(inbox_batches.c.id.in_(old))
                    )
                return len(old)

            async with self._store.write() as connection:
                gone = await prune_in(connection)
            deleted += gone
            if gone < chunk:
                break
        return deleted

    # --- views -------------------------------------------------------------------------------
    async def busy_calendars(self) -> set[tuple[str, str]]:
        """Calendars with a pending or claimed job."""
        async with self._store.read() as connection:
            rows = await connection.execute(sa.select(jobs.c.tenant_id, jobs.c.mailbox))
        return {(row.tenant_id, row.mailbox) for row in rows}


def _by_tenant(calendars: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(tenant, mailbox) pairs grouped as each tenant's mailboxes."""
    grouped: dict[str, list[str]] = {}
    for tenant, mailbox in calendars:
        grouped.setdefault(tenant, []).append(mailbox)
    return grouped


def _chunks(values: Sequence[T], size: int = 500) -> Iterable[Sequence[T]]:
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def needs_lifecycle(item: InboxItem) -> bool:
    """Whether storing ``item`` involves the subscriptions table (a mailbox to look up or a
    subscription to mark for the orchestration)."""
    return (item.mailbox is None and bool(item.subscription_id)) or item.kind in (
        NotificationKind.SUBSCRIPTION_REMOVED,
        NotificationKind.REAUTHORIZATION_REQUIRED,
    )


def _utc_text(value: dt.datetime) -> str:
    """An instant as ISO text in UTC, so that texts compare as the instants do."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _job_row(
    key: tuple[str, str],
    full: bool,
    due: dt.datetime,
    now: dt.datetime,
    *,
    notified: dt.datetime | None = None,
) -> dict[str, Any]:
    """A new pending job of the calendar ``key``."""
    tenant, mailbox = key
    return {
        "tenant_id": tenant,
        "mailbox": mailbox,
        "kind": FULL_RESYNC if full else REFRESH,
        "due_at": due,
        "attempts": 0,
        "created_at": now,
        "last_notified_at": notified,
    }


# The kinds' properties as plain lookups: this runs for every notification of a round.
_CHANGE = NotificationKind.CHANGE
_REFRESHING = frozenset(kind for kind in NotificationKind if kind.needs_refresh)
_FULL_RESYNC_KINDS = frozenset(kind for kind in NotificationKind if kind.needs_full_resync)
_KIND_TEXT = {kind: kind.value for kind in NotificationKind}


def _entry(item: InboxItem) -> dict[str, Any]:
    """An accepted notification as its inbox batch lists it (docs/storage.md)."""
    entry: dict[str, Any] = {"kind": _KIND_TEXT[item.kind]}
    if item.subscription_id is not None:
        entry["subscriptionId"] = item.subscription_id
    if item.mailbox:
        entry["mailbox"] = item.mailbox[:_MAX_KEY]
    if item.change_type is not None:
        entry["changeType"] = item.change_type
    if item.payload:
        entry.update(item.payload)
    return entry


def _sort(
    items: Sequence[InboxItem],
) -> tuple[
    dict[tuple[str, str], bool],
    set[tuple[str, str]],
    dict[tuple[str, str], list[dict[str, Any]]],
]:
    """One pass over a round's items: the calendars they ask to refresh (each with whether a
    full resync is asked), those named by change notifications, and the inbox
    entries by (tenant, source), one inbox row each."""
    wanted: dict[tuple[str, str], bool] = {}
    changed: set[tuple[str, str]] = set()
    batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in items:
        kind = item.kind
        if item.mailbox and kind in _REFRESHING:
            key = (item.tenant_id, item.mailbox)
            if kind is _CHANGE:
                changed.add(key)
                wanted.setdefault(key, False)
            else:
                wanted[key] = wanted.get(key, False) or kind in _FULL_RESYNC_KINDS
        source = (item.tenant_id, item.via)
        entries = batches.get(source)
        if entries is None:
            entries = batches[source] = []
        entries.append(_entry(item))
    return wanted, changed, batches
