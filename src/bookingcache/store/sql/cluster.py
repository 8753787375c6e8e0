"""``SqlCluster``: the cluster port (``store.duties.Cluster``) over ``duty_leases`` and
``process_heartbeats``, one behaviour on SQLite and PostgreSQL.

A lease changes hands in one ``UPDATE ... WHERE holder = me OR expires_at < now``: on
PostgreSQL the row lock orders two takers and the second re-checks the condition against the
first's commit, so only one wins; on SQLite the write path is single-writer. Every change of
holder adds one to ``token``.

Job claims are made under ``<incarnation>/<claim>`` (``store.sql.claims``): releasing an
incarnation's claims sets their lease to have run out, so the next claim takes them (and folds
a pending job of the same calendar into them: one read).

Which peers are dead: on PostgreSQL each incarnation holds a session-level advisory lock on a
connection of its own for as long as it lives. A process that dies loses its session, and with
it the lock, at once; one that is only slow or stopped keeps both. A peer is dead once its lock
is free and its heartbeat is older than ``stale_after_s`` (two beats): a kill is found within
seconds, and a process starved of CPU on a loaded host is never taken for dead (its claims and
leases run out by themselves if it never comes back). A process judges others only once it has
held its own lock for ``dead_after_s``, so after the database restarts (every lock gone) the
live processes have time to take theirs back. On SQLite, with one process, a peer is dead when
its heartbeat is older than ``dead_after_s``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.store.duties import Lease
from bookingcache.store.sql import notices
from bookingcache.store.sql.schema import duty_leases, jobs, process_heartbeats
from bookingcache.store.sql.store import SqlStore

_EPSILON = dt.timedelta(microseconds=1)
# The advisory locks' first key: liveness ("bk"); the second is ``hashtext(incarnation)``.
_LIVENESS = 0x626B

log = logging.getLogger(__name__)


class _Liveness:
    """One incarnation's session-level advisory lock, on a PostgreSQL connection of its own."""

    def __init__(self, store: SqlStore, incarnation: str, clock: Clock) -> None:
        self._store = store
        self._incarnation = incarnation
        self._clock = clock
        self._session: asyncpg.Connection | None = None
        self.since: dt.datetime | None = None  # held without a break since

    async def keep(self) -> None:
        """Hold the lock: take it again on a new session if the last one was lost."""
        if self._session is not None and not self._session.is_closed():
            try:
                await self._session.fetchval("SELECT 1", timeout=5)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await self.close()
        session = await self._store.own_session(f"bookingcache liveness {self._incarnation}")
        try:
            taken = await session.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", _LIVENESS, self._incarnation
            )
        except BaseException:
            await session.close()
            raise
        if not taken:  # the lost session has not ended yet on the server: next beat
            await session.close()
            return
        self._session, self.since = session, self._clock.now()

    def held_for(self) -> float:
        if self.since is None:
            return 0.0
        return (self._clock.now() - self.since).total_seconds()

    async def close(self) -> None:
        session, self._session, self.since = self._session, None, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close(timeout=5)


class SqlCluster:
    """Its heartbeats and leases go through a pool of their own (``SqlStore.companion``): when
    every connection of the process's pool waits (behind a lock a stopped peer holds, or on a
    database coming back), the process still beats, renews and takes duties over."""

    def __init__(self, store: SqlStore, *, clock: Clock) -> None:
        self._main = store
        self._store = store.companion()
        self._clock = clock
        self._sessions: dict[str, _Liveness] = {}

    def _sessions_bound(self) -> bool:
        return self._store.dialect == "postgresql"

    async def _live(self, incarnation: str) -> _Liveness | None:
        """PostgreSQL: the incarnation's liveness lock, held (taken again if it was lost)."""
        if not self._sessions_bound():
            return None
        liveness = self._sessions.get(incarnation)
        if liveness is None:
            liveness = self._sessions[incarnation] = _Liveness(
                self._store, incarnation, self._clock
            )
        await liveness.keep()
        return liveness

    async def close(self) -> None:
        """End this process's liveness sessions without retiring (what a crash does: peers
        find it dead), and the cluster's own pool; a clean stop retires first."""
        for liveness in self._sessions.values():
            await liveness.close()
        self._sessions.clear()
        if self._store is not self._main:
            await self._store.close()

    # --- processes -------------------------------------------------------------------------
    async def register(self, incarnation: str, instance_id: str) -> int:
        await self._live(incarnation)
        now = self._clock.now()

        def work(connection: Connection) -> int:
            earlier = [
                row.incarnation
                for row in connection.execute(
                    sa.select(process_heartbeats.c.incarnation).where(
                        process_heartbeats.c.instance_id == instance_id,
                        process_heartbeats.c.incarnation != incarnation,
                    )
                )
            ]
            taken = _let_go(connection, earlier, now=now)
            _beat(connection, incarnation, instance_id, now=now)
            return taken

        taken = await self._store.transaction(work)
        if taken:
            self._main.announce(notices.JOBS_CHANNEL, "")
        return taken

    async def heartbeat(
        self, incarnation: str, *, dead_after_s: float, stale_after_s: float | None = None
    ) -> int:
        liveness = await self._live(incarnation)
        now = self._clock.now()
        if liveness is None:
            silent_since = now - dt.timedelta(seconds=dead_after_s)
        else:
            stale_s = dead_after_s if stale_after_s is None else stale_after_s
            silent_since = now - dt.timedelta(seconds=stale_s)

        def beat(connection: Connection) -> None:
            # An upsert: a process that peers took for dead (stalled past ``dead_after_s``)
            # comes back as a live one; the claims it lost meanwhile stay lost (fenced).
            _beat(connection, incarnation, None, now=now)

        def bury(connection: Connection) -> int:
            # The silent peers' rows are locked first, in one order, and a row another process
            # is already releasing (or whose owner is beating right now) is skipped: two
            # processes never release one peer together, so they cannot deadlock on its claims
            # and leases, and a beat that commits first keeps its process alive.
            query = (
                sa.select(process_heartbeats.c.incarnation)
                .where(process_heartbeats.c.heartbeat_at < silent_since)
                .order_by(process_heartbeats.c.incarnation)
            )
            if connection.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            silent = [row.incarnation for row in connection.execute(query)]
            if liveness is not None:
                # Dead only when its session is gone too: its lock is free (taken here for the
                # transaction only, and so let go at the commit).
                silent = [
                    peer
                    for peer in silent
                    if peer != incarnation
                    and connection.execute(
                        sa.select(
                            sa.func.pg_try_advisory_xact_lock(_LIVENESS, sa.func.hashtext(peer))
                        )
                    ).scalar_one()
                ]
            return _let_go(connection, silent, now=now)

        # Two transactions: a process's own beat never waits behind the release of a peer.
        await self._store.transaction(beat)
        if liveness is not None and liveness.held_for() < dead_after_s:
            return 0  # just (re)joined: live peers may not have their locks back yet
        released = await self._store.transaction(bury)
        if released:
            self._main.announce(notices.JOBS_CHANNEL, "")
        return released

    async def retire(self, incarnation: str) -> None:
        def work(connection: Connection) -> None:
            connection.execute(
                sa.delete(process_heartbeats).where(process_heartbeats.c.incarnation == incarnation)
            )
            _free_leases(connection, [incarnation])

        try:
            await self._store.transaction(work)
        finally:
            liveness = self._sessions.pop(incarnation, None)
            if liveness is not None:
                await liveness.close()

    # --- leases ----------------------------------------------------------------------------
    async def acquire(self, duty: str, holder: str, *, lease_s: float) -> Lease | None:
        now = self._clock.now()
        until = now + dt.timedelta(seconds=lease_s)

        def work(connection: Connection) -> Lease | None:
            connection.execute(
                _upsert(connection, duty_leases)
                .values(duty=duty, token=0)
                .on_conflict_do_nothing(index_elements=["duty"])
            )
            renewed = connection.execute(
                sa.update(duty_leases)
                .where(
                    duty_leases.c.duty == duty,
                    duty_leases.c.holder == holder,
                    duty_leases.c.expires_at >= now,
                )
                .values(expires_at=until)
                .returning(duty_leases.c.token)
            ).first()
            if renewed is not None:
                return Lease(duty, holder, int(renewed.token), until)
            taken = connection.execute(
                sa.update(duty_leases)
                .where(
                    duty_leases.c.duty == duty,
                    sa.or_(
                        duty_leases.c.holder.is_(None),
                        duty_leases.c.expires_at.is_(None),
                        duty_leases.c.expires_at < now,
                    ),
                )
                .values(
                    holder=holder,
                    token=duty_leases.c.token + 1,
                    expires_at=until,
                    acquired_at=now,
                )
                .returning(duty_leases.c.token)
            ).first()
            return None if taken is None else Lease(duty, holder, int(taken.token), until)

        return await self._store.transaction(work)

    async def renew(self, lease: Lease, *, lease_s: float) -> Lease | None:
        now = self._clock.now()
        until = now + dt.timedelta(seconds=lease_s)

        def work(connection: Connection) -> bool:
            result = connection.execute(
                sa.update(duty_leases)
                .where(holds(lease), duty_leases.c.expires_at >= now)
                .values(expires_at=until)
            )
            return (result.rowcount or 0) > 0

        kept = await self._store.transaction(work)
        return Lease(lease.duty, lease.holder, lease.token, until) if kept else None

    async def release(self, lease: Lease) -> None:
        def work(connection: Connection) -> None:
            connection.execute(
                sa.update(duty_leases).where(holds(lease)).values(holder=None, expires_at=None)
            )

        await self._store.transaction(work)

    async def leases(self) -> list[Lease]:
        async with self._store.read() as connection:
            rows = await connection.execute(sa.select(duty_leases).order_by(duty_leases.c.duty))
            return [
                Lease(row.duty, row.holder, int(row.token), row.expires_at)
                for row in rows
                if row.holder is not None and row.expires_at is not None
            ]


def holds(lease: Lease) -> sa.ColumnElement[bool]:
    """The lease row is still ``lease``'s: same duty, holder and token."""
    return sa.and_(
        duty_leases.c.duty == lease.duty,
        duty_leases.c.holder == lease.holder,
        duty_leases.c.token == lease.token,
    )


def fence(connection: Connection, lease: Lease, *, now: dt.datetime) -> bool:
    """Inside a duty's write transaction: whether ``lease`` still holds (and has not run out).
    On PostgreSQL the lease row stays locked to the end of the transaction, so no one takes the
    duty over between this check and the commit."""
    query = sa.select(duty_leases.c.duty).where(holds(lease), duty_leases.c.expires_at >= now)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).first() is not None


def _beat(
    connection: Connection, incarnation: str, instance_id: str | None, *, now: dt.datetime
) -> None:
    upsert = _upsert(connection, process_heartbeats).values(
        incarnation=incarnation,
        instance_id=instance_id or incarnation.rsplit("@", 1)[0],
        started_at=now,
        heartbeat_at=now,
    )
    connection.execute(
        upsert.on_conflict_do_update(index_elements=["incarnation"], set_={"heartbeat_at": now})
    )


def _upsert(connection: Connection, table: sa.Table) -> sa.dialects.postgresql.Insert:
    from sqlalchemy.dialects import postgresql, sqlite

    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)  # type: ignore[return-value]


def _let_go(connection: Connection, incarnations: list[str], *, now: dt.datetime) -> int:
    """The claims and leases of ``incarnations`` (dead, or earlier lives of this process) are
    released: claims fall due now, leases are free; their heartbeat rows go."""
    if not incarnations:
        return 0
    released = 0
    for incarnation in incarnations:
        prefix = f"{incarnation}/"
        result = connection.execute(
            sa.update(jobs)
            .where(
                jobs.c.locked_by.is_not(None),
                sa.func.substr(jobs.c.locked_by, 1, len(prefix)) == prefix,
                jobs.c.locked_until >= now,
            )
            .values(locked_until=now - _EPSILON)
        )
        released += max(result.rowcount or 0, 0)
    _free_leases(connection, incarnations)
    connection.execute(
        sa.delete(process_heartbeats).where(process_heartbeats.c.incarnation.in_(incarnations))
    )
    return released


def _free_leases(connection: Connection, incarnations: list[str]) -> None:
    connection.execute(
        sa.update(duty_leases)
        .where(duty_leases.c.holder.in_(incarnations))
        .values(holder=None, expires_at=None)
    )
