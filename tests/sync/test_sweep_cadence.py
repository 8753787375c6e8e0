"""The sweep's cadence: each calendar read at its own instant of its bound."""

from __future__ import annotations

import collections
import datetime as dt

import sqlalchemy as sa

from bookingcache.clock import FixedClock
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.schema import calendars, jobs
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync import cadence
from bookingcache.sync.sweep import Sweep
from tests.support.tenants import TENANT, add_tenant

SHORT_S = 900.0
PASS_S = 30.0


async def _jobs(store: SqlStore) -> dict[str, dt.datetime]:
    async with store.read() as conn:
        rows = await conn.execute(sa.select(jobs.c.mailbox, jobs.c.due_at))
        return {row.mailbox: row.due_at for row in rows}


async def _synced_at(store: SqlStore, at: dt.datetime, mailboxes: list[str] | None = None) -> None:
    """The calendars' last successful refresh (as a refresh writes it) at ``at``."""
    statement = sa.update(calendars).values(last_success_at=at, last_refresh_at=at)
    if mailboxes is not None:
        statement = statement.where(calendars.c.mailbox.in_(mailboxes))
    await store.transaction(lambda conn: conn.execute(statement))


async def _passes(sweep: Sweep, clock: FixedClock, until: dt.datetime) -> None:
    """The sweep's passes, one every ``PASS_S``, up to ``until``."""
    while clock.now() <= until:
        await sweep.run_once()
        clock.advance(dt.timedelta(seconds=PASS_S))


def _grid(mailbox: str, synced: dt.datetime, bound_s: float) -> dt.datetime:
    return cadence.next_read(synced, bound_s=bound_s, at=cadence.phase(TENANT, mailbox))


def test_each_calendar_is_read_once_per_bound_at_its_own_instant() -> None:
    synced = dt.datetime(2026, 1, 5, 8, 0, 0, 123_000, tzinfo=dt.UTC)
    seen = set()
    for index in range(200):
        at = cadence.phase(TENANT, f"room-{index}@x.example")
        first = cadence.next_read(synced, bound_s=SHORT_S, at=at)
        assert synced < first <= synced + dt.timedelta(seconds=SHORT_S)
        # Read at its instant, it is read again exactly one bound later.
        second = cadence.next_read(first, bound_s=SHORT_S, at=at)
        assert abs((second - first).total_seconds() - SHORT_S) < 1e-3
        seen.add(first)
    assert len(seen) == 200
    # The phase is the calendar's, whatever the process or the mailbox's spelling.
    assert cadence.phase(TENANT, "Room-1@X.example") == cadence.phase(TENANT, "room-1@x.example")


async def test_calendars_synced_together_are_read_spread_over_the_bound(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    rooms = await add_tenant(store, rooms=1000)
    synced = clock.now()
    await _synced_at(store, synced)
    sweep = Sweep(store=store, queue=queue, inbox=inbox, clock=clock, bound_s=SHORT_S)
    await _passes(sweep, clock, synced + dt.timedelta(seconds=SHORT_S))
    due = await _jobs(store)
    assert set(due) == set(rooms)  # each once, none past its bound
    offsets = [(at - synced).total_seconds() for at in due.values()]
    assert all(0 < offset <= SHORT_S for offset in offsets)
    # Ten stretches of the bound: none holds much more (or less) than its tenth. The phases
    # are hashes, so a stretch's count varies as a binomial's (here by about 10).
    tenths = collections.Counter(min(int(offset // (SHORT_S / 10)), 9) for offset in offsets)
    assert max(tenths.values()) <= 130
    assert min(tenths.values()) >= 70
    # Nor any one pass: a pass queues about its share, each read at its own instant.
    per_pass = collections.Counter(int(offset // PASS_S) for offset in offsets)
    assert max(per_pass.values()) <= 2 * 1000 * PASS_S / SHORT_S
    assert len(set(due.values())) > 990

    # Each read at its instant: the next bound reads them at the same spread, one bound on.
    clock.set(synced + dt.timedelta(seconds=SHORT_S))
    await store.transaction(lambda conn: conn.execute(sa.delete(jobs)))
    for mailbox, at in due.items():
        await _synced_at(store, at, [mailbox])
    await _passes(sweep, clock, synced + dt.timedelta(seconds=2 * SHORT_S))
    again = await _jobs(store)
    assert set(again) == set(rooms)
    for mailbox, at in again.items():
        assert abs((at - due[mailbox]).total_seconds() - SHORT_S) < 1e-3


async def test_a_sweep_refresh_is_a_delta_round_and_leaves_a_resync_one(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    quiet, missed = await add_tenant(store, rooms=2)
    sweep = Sweep(store=store, queue=queue, inbox=inbox, clock=clock, bound_s=SHORT_S)
    assert await sweep.run_once() == 2
    # Graph said it dropped notifications of one calendar: its job becomes a full resync,
    # which the sweep's job does not undo.
    await inbox.append([InboxItem(TENANT, missed, kind=NotificationKind.MISSED)])
    assert await sweep.run_once() == 0
    clock.advance(dt.timedelta(seconds=5))
    claimed = {job.mailbox: job.full_resync for job in await queue.claim("w", 10)}
    assert claimed == {quiet: False, missed: True}
