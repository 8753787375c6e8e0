"""``SqlJobQueue``: the job-queue port over the ``jobs`` table (one behaviour on SQLite and
PostgreSQL).

A calendar has at most one *pending* job (``locked_by IS NULL``; a unique index holds it) and at
most one *claimed* job. Accepting notifications for a calendar creates its pending job due after
the short gather delay (``coalesce_s``), or keeps the existing one, only ever pulling it earlier
and recording on it the time of the newest change notification; a notification that arrives
while the calendar's refresh runs lands in a new pending job, which cannot be claimed before
the running one ends, so it causes exactly one more refresh.

Claiming is ``store.sql.claims``. The module runs a little over 500 lines: it is the rest of the
port (accepting, completing, failing, handing back, the views), each a short transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.store.duties import Lease, LeaseLost
from bookingcache.store.jobs import Job
from bookingcache.store.sql import claims, cluster, notices
from bookingcache.store.sql.claims import FULL_RESYNC, REFRESH
from bookingcache.store.sql.schema import calendars, jobs
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.windows import chunked

log = logging.getLogger(__name__)

# A claim reads the whole queue to find when to look again (``claims``): with at most this many
# jobs left at the last claim it is brief (SQLite may run it on the event loop's thread:
# ``SqlBase.transaction``); a longer queue's claim goes to the writer thread, so that it does not
# hold up the loop. Completions delete claimed rows by key: always brief.
BRIEF_CLAIM_DEPTH = 256


class SqlJobQueue:
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
        # ... and the earliest due time of the jobs it left waiting though due.
        self.oldest_due: dt.datetime | None = None
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

    def committed(self, due: dt.datetime | None = None) -> None:
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

    def make_pending(
        self,
        connection: Connection,
        wanted: Mapping[tuple[str, str], bool],
        *,
        due: dt.datetime,
        now: dt.datetime,
        notified: dt.datetime,
        changed: AbstractSet[tuple[str, str]],
    ) -> int:
        """Give each calendar of ``wanted`` ((tenant, mailbox) -> whether a full resync is
        asked) that the service caches a pending job due at ``due`` at the latest (created,
        or the existing one pulled earlier and upgraded to a full resync); the jobs of those
        in ``changed`` record ``notified`` as their newest change notification. Calendars the
        service does not cache are left out. Returns how many calendars got one.

        One statement per tenant and kind of job, whatever the number of calendars: it takes
        the calendars from the ``calendars`` table, so looking them up and writing their jobs
        is one pass of the database's, not a round of parameters per calendar."""
        groups: dict[tuple[str, bool, bool], list[str]] = {}
        for key, full in wanted.items():
            groups.setdefault((key[0], full, key in changed), []).append(key[1])
        statement = self._pending_upsert()
        made = 0
        for (tenant, full, was_changed), mailboxes in groups.items():
            for chunk in chunked(mailboxes):
                result = connection.execute(
                    statement,
                    {
                        "tenant": tenant,
                        "mailboxes": chunk,
                        "kind": FULL_RESYNC if full else REFRESH,
                        "due": due,
                        "created": now,
                        "notified": notified if was_changed else None,
                    },
                )
                made += max(result.rowcount or 0, 0)
        return made

    def _pending_upsert(self) -> Any:
        """The statement of ``make_pending``, built once: its ``excluded`` namespace builds a
        column collection, which costs more than the statement's run."""
        if self._upsert is None:
            chosen = sa.select(
                calendars.c.tenant_id,
                calendars.c.mailbox,
                sa.bindparam("kind", type_=jobs.c.kind.type),
                sa.bindparam("due", type_=jobs.c.due_at.type),
                sa.literal(0, type_=jobs.c.attempts.type),
                sa.bindparam("created", type_=jobs.c.created_at.type),
                sa.bindparam("notified", type_=jobs.c.last_notified_at.type),
            ).where(
                calendars.c.tenant_id == sa.bindparam("tenant"),
                self._mailbox_in_list(),
            )
            statement = self._insert().from_select(
                [
                    "tenant_id",
                    "mailbox",
                    "kind",
                    "due_at",
                    "attempts",
                    "created_at",
                    "last_notified_at",
                ],
                chosen,
            )
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

    def _mailbox_in_list(self) -> Any:
        """``calendars.mailbox`` among the list bound as ``mailboxes``, as one parameter: an
        expanding ``IN`` would render a bind per mailbox at every run (intake runs this in every
        commit round, with as many mailboxes as the round names), and on SQLite would make
        another statement text, to prepare again, for every length of the list."""
        if self._postgres:
            return calendars.c.mailbox == sa.any_(
                sa.bindparam("mailboxes", type_=postgresql.ARRAY(sa.String))
            )
        listed = sa.func.json_each(sa.bindparam("mailboxes", type_=sa.JSON)).table_valued("value")
        return calendars.c.mailbox.in_(sa.select(listed.c.value))

    async def enqueue(
        self,
        calendars_due: Mapping[tuple[str, str], dt.datetime],
        *,
        full_resync: bool = False,
        fence: Lease | None = None,
    ) -> int:
        """Give each calendar a refresh due at the given time unless it already has a pending
        or running job (the sweep's path). Returns how many jobs were created. With ``fence``,
        only while that duty lease holds (``LeaseLost`` otherwise, and nothing written)."""
        if not calendars_due:
            return 0
        now = self._clock.now()

        def work(connection: Connection) -> tuple[int, dt.datetime | None]:
            if fence is not None and not cluster.fence(connection, fence, now=now):
                raise LeaseLost(f"the {fence.duty} duty's lease is no longer held")
            busy = self._busy(connection, calendars_due.keys())
            todo = {
                key: (due, full_resync) for key, due in calendars_due.items() if key not in busy
            }
            earliest = min((due for due, _ in todo.values()), default=None)
            return self._enqueue(connection, todo, now=now), earliest

        created, earliest = await self._store.transaction(work)
        if created:
            self.committed(earliest)
        return created

    async def request_refresh(
        self,
        calendars: Iterable[tuple[str, str]],
        *,
        due: dt.datetime,
        full_resync: bool = False,
    ) -> int:
        wanted = dict.fromkeys(calendars, full_resync)
        if not wanted:
            return 0
        now = self._clock.now()

        def work(connection: Connection) -> int:
            return self.make_pending(
                connection, wanted, due=due, now=now, notified=now, changed=frozenset()
            )

        made = await self._store.transaction(work)
        if made:
            self.committed(due)
        return made

    def _busy(
        self, connection: Connection, keys: Iterable[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        tenants = {tenant for tenant, _ in keys}
        rows = connection.execute(
            sa.select(jobs.c.tenant_id, jobs.c.mailbox).where(jobs.c.tenant_id.in_(tenants))
        )
        return {(row.tenant_id, row.mailbox) for row in rows}

    def _enqueue(
        self,
        connection: Connection,
        wanted: dict[tuple[str, str], tuple[dt.datetime, bool]],
        *,
        now: dt.datetime,
    ) -> int:
        if not wanted:
            return 0
        known = known_calendars(connection, wanted)
        targets = {key: value for key, value in wanted.items() if key in known}
        if not targets:
            return 0
        rows = [pending_row(key, full, due, now) for key, (due, full) in targets.items()]
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
        if limit <= 0:
            return []
        claiming = claims.Claim(
            worker_id=worker_id,
            limit=limit,
            excluded=sorted(set(exclude_tenants)),
            now=self._clock.now(),
            coalesce_s=self.coalesce_s,
            coalesce_window_s=self.coalesce_window_s,
            lease_s=self.lease_s,
        )
        outcome = await self._store.transaction(
            lambda connection: claims.claim(connection, claiming),
            brief=self.depth <= BRIEF_CLAIM_DEPTH,
        )
        self.held_until = outcome.held_until
        self.depth = outcome.depth
        self.upcoming = outcome.upcoming
        self.oldest_due = outcome.oldest_due
        return outcome.jobs

    def _mine(self, job: Job) -> Any:
        return sa.and_(jobs.c.id == job.id, jobs.c.locked_by == job.lease)

    async def extend(self, job: Job) -> bool:
        """Renew the lease of a long refresh; False when the claim was lost."""
        until = self._clock.now() + dt.timedelta(seconds=self.lease_s)

        def work(connection: Connection) -> bool:
            result = connection.execute(
                sa.update(jobs).where(self._mine(job)).values(locked_until=until)
            )
            return (result.rowcount or 0) > 0

        return await self._store.transaction(work)

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
            except Exception as exc:  # noqa: BLE001 (each waiting completion gets the error)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for job, future in batch:
                    if not future.done():
                        future.set_result(job.id in done)

    async def _complete_many(self, batch: Sequence[Job]) -> set[int]:
        def work(connection: Connection) -> set[int]:
            deleted = connection.execute(_COMPLETE, {"claims": [(j.id, j.lease) for j in batch]})
            return {row[0] for row in deleted}

        return await self._store.transaction(work, brief=True)

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

        def work(connection: Connection) -> bool:
            owned = connection.scalar(sa.select(jobs.c.id).where(self._mine(job)))
            if owned is None:
                return False
            if give_up:
                connection.execute(sa.delete(jobs).where(jobs.c.id == job.id))
                return False
            pending = (
                connection.execute(
                    sa.select(jobs.c.id, jobs.c.due_at, jobs.c.kind).where(
                        jobs.c.tenant_id == job.tenant_id,
                        jobs.c.mailbox == job.mailbox,
                        jobs.c.locked_by.is_(None),
                    )
                )
            ).first()
            if pending is None:
                connection.execute(
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
                connection.execute(sa.delete(jobs).where(jobs.c.id == job.id))
                connection.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == pending.id)
                    .values(
                        due_at=max(pending.due_at, due),
                        attempts=attempts,
                        kind=FULL_RESYNC if job.full_resync else pending.kind,
                        last_error=error,
                    )
                )
            return True

        kept = await self._store.transaction(work)
        if kept:
            self.committed()
        return kept

    # --- views -------------------------------------------------------------------------------
    async def busy_calendars(self) -> set[tuple[str, str]]:
        """Calendars with a pending or claimed job."""
        async with self._store.read() as connection:
            rows = await connection.execute(sa.select(jobs.c.tenant_id, jobs.c.mailbox))
        return {(row.tenant_id, row.mailbox) for row in rows}


# Built once: building a statement (its comparisons and their coercions) costs more than
# running it. The worker completes a round of refreshes with this one ((id, lease) pairs).
_COMPLETE = (
    sa.delete(jobs)
    .where(sa.tuple_(jobs.c.id, jobs.c.locked_by).in_(sa.bindparam("claims", expanding=True)))
    .returning(jobs.c.id)
)

# Built once, as ``_COMPLETE``: intake runs it in every commit round.
_KNOWN = sa.select(calendars.c.mailbox).where(
    calendars.c.tenant_id == sa.bindparam("tenant"),
    calendars.c.mailbox.in_(sa.bindparam("mailboxes", expanding=True)),
)


def known_calendars(
    connection: Connection, wanted: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The calendars among ``wanted`` that the service caches (jobs reference them)."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, mailbox in wanted:
        by_tenant.setdefault(tenant, []).append(mailbox)
    known: set[tuple[str, str]] = set()
    for tenant, mailboxes in by_tenant.items():
        for chunk in chunked(mailboxes):
            rows = connection.execute(_KNOWN, {"tenant": tenant, "mailboxes": chunk})
            known.update((tenant, mailbox) for (mailbox,) in rows)
    return known


def _utc_text(value: dt.datetime) -> str:
    """An instant as ISO text in UTC, so that texts compare as the instants do."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def pending_row(
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
