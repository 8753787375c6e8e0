"""The sweep's cadence: each calendar read at its own instant of its bound, the long bound for
calendars whose subscription is listening, the short one for every other."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from bookingcache.clock import FixedClock
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.store.dutystate import SilenceRecord
from bookingcache.store.sql.dutystate import SqlDutyState
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.schema import calendars, jobs, subscriptions
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from bookingcache.sync import cadence
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.sweep import Sweep
from tests.support.tenants import TENANT, add_tenant

SHORT_S = 900.0
PASS_S = 30.0
_S = dt.timedelta(seconds=1)


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


def _asked(registry: CollectorRegistry) -> dict[str, float]:
    """``bookingcache_sync_sweep_reads_total`` by bound."""
    return {
        sample.labels["bound"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "bookingcache_sync_sweep_reads_total"
    }


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


def test_the_long_bound_leaves_the_short_one_within_the_tenants_bound() -> None:
    assert cadence.long_bound_s(short_s=900, healthy_s=14_400, staleness_s=3600) == 2700
    assert cadence.long_bound_s(short_s=900, healthy_s=14_400, staleness_s=86_400) == 14_400
    assert cadence.long_bound_s(short_s=900, healthy_s=1800, staleness_s=3600) == 1800
    # A tenant bound under twice the short one: the short bound, as for every calendar.
    assert cadence.long_bound_s(short_s=900, healthy_s=14_400, staleness_s=1200) == 900


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


@dataclasses.dataclass
class Rig:
    """A sweep with the subscriptions' records and the silence duty's judgements."""

    store: SqlStore
    clock: FixedClock
    records: SqlSubscriptions
    duty_state: SqlDutyState
    queue: SqlJobQueue
    inbox: SqlInbox

    registry: CollectorRegistry = dataclasses.field(default_factory=CollectorRegistry)

    def sweep(self, *, healthy_bound_s: float = 4 * 3600.0) -> Sweep:
        return Sweep(
            store=self.store,
            queue=self.queue,
            inbox=self.inbox,
            clock=self.clock,
            bound_s=SHORT_S,
            healthy_bound_s=healthy_bound_s,
            interval_s=PASS_S,
            subscriptions=self.records,
            duty_state=self.duty_state,
            metrics=SyncMetrics.of(self.registry),
        )

    async def listening(self, mailboxes: list[str], **judgement: object) -> None:
        """Active subscriptions for days yet, and the silence duty's judgement of each."""
        for mailbox in mailboxes:
            expires = self.clock.now() + dt.timedelta(days=3)
            await self.records.record(TENANT, mailbox, f"sub-{mailbox}", expires_at=expires)
        await self.judged(mailboxes, baseline=self.clock.now(), **judgement)

    async def judged(self, mailboxes: list[str], **judgement: object) -> None:
        await self.duty_state.save_silence(
            [SilenceRecord(TENANT, mailbox, **judgement) for mailbox in mailboxes],  # type: ignore[arg-type]
            cursor=1,
            lease=None,
        )

    async def subscription(self, mailbox: str, **values: object) -> None:
        """Change the calendar's subscription row as intake and lifecycle events do."""
        statement = sa.update(subscriptions).where(subscriptions.c.mailbox == mailbox)
        await self.store.transaction(lambda conn: conn.execute(statement.values(**values)))


@pytest.fixture
def rig(store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock) -> Rig:
    return Rig(
        store,
        clock,
        SqlSubscriptions(store, clock=clock),
        SqlDutyState(store, clock=clock),
        queue,
        inbox,
    )


async def test_only_calendars_whose_subscription_listens_get_the_long_bound(rig: Rig) -> None:
    store, clock, records = rig.store, rig.clock, rig.records
    rooms = await add_tenant(store, rooms=9)
    synced = clock.now()
    await _synced_at(store, synced)
    healthy, failing, removed, expiring, refresh_fails = rooms[:5]
    await rig.listening(rooms[:5])
    await records.fail(TENANT, [failing], "the connector could not renew it")
    await rig.subscription(removed, needs_action="recreate")
    soon = clock.now() + dt.timedelta(minutes=30)
    await records.record(TENANT, expiring, f"sub-{expiring}", expires_at=soon)
    await store.record_sync_error(TENANT, refresh_fails, error="graph-error", at=clock.now())
    silent, suspect, unheard, _unsubscribed = rooms[5:]  # the last: no subscription at all
    await rig.listening([silent], silent_since=clock.now())
    await rig.listening([suspect], unannounced=1)
    # A subscription the silence duty never judged, in a tenant nothing was notified to: not
    # heard from.
    await records.record(TENANT, unheard, "sub-unheard", expires_at=soon + dt.timedelta(days=3))

    long_s = 2700.0  # the tenant's staleness bound (3600 s) less the short bound
    await _passes(rig.sweep(), clock, synced + dt.timedelta(seconds=long_s))
    due = await _jobs(store)
    assert due[healthy] == _grid(healthy, synced, long_s)
    for mailbox in rooms[1:]:
        assert due[mailbox] == _grid(mailbox, synced, SHORT_S), mailbox
    # The metric tells the two kinds of read apart.
    assert _asked(rig.registry) == {"long": 1, "short": 8}


async def test_a_recent_notification_to_the_tenant_counts_as_heard_but_never_outweighs_silence(
    rig: Rig,
) -> None:
    store, clock = rig.store, rig.clock
    notified, silent, unjudged = await add_tenant(store, rooms=3)
    synced = clock.now()
    await _synced_at(store, synced)
    for mailbox in (notified, unjudged):
        await rig.records.record(TENANT, mailbox, f"sub-{mailbox}", expires_at=None)
    await rig.listening([silent], silent_since=clock.now())
    await rig.subscription(notified, last_notification_at=synced - dt.timedelta(minutes=5))
    await rig.subscription(silent, last_notification_at=synced - dt.timedelta(minutes=2))
    await _passes(rig.sweep(healthy_bound_s=1800), clock, synced + dt.timedelta(seconds=1800))
    due = await _jobs(store)
    assert due[notified] == _grid(notified, synced, 1800)
    # Never judged and never notified itself (an empty room): its tenant's notifications
    # arrive, so its healthy subscription counts as heard.
    assert due[unjudged] == _grid(unjudged, synced, 1800)
    assert due[silent] == _grid(silent, synced, SHORT_S)

    # The tenant's last notification an hour ago, longer than the long bound: nothing heard.
    await store.transaction(lambda conn: conn.execute(sa.delete(jobs)))
    clock.set(synced)
    for mailbox in (notified, silent):
        await rig.subscription(mailbox, last_notification_at=synced - dt.timedelta(hours=1))
    await _passes(rig.sweep(healthy_bound_s=1800), clock, synced + dt.timedelta(seconds=1800))
    due = await _jobs(store)
    for mailbox in (notified, unjudged, silent):
        assert due[mailbox] == _grid(mailbox, synced, SHORT_S), mailbox


async def test_a_calendar_read_on_its_notification_is_next_read_one_bound_after_that_read(
    rig: Rig,
) -> None:
    store, clock = rig.store, rig.clock
    read_on_notice, swept, notified_before = await add_tenant(store, rooms=3)
    synced = clock.now()
    await _synced_at(store, synced)
    await rig.listening([read_on_notice, swept, notified_before])
    # Its last success came 2 s after its notification: the read that notification asked for.
    notice = synced - dt.timedelta(seconds=2)
    await rig.subscription(read_on_notice, last_notification_at=notice)
    # Notified 10 minutes before its last success: that success was another read (the sweep's).
    await rig.subscription(notified_before, last_notification_at=synced - dt.timedelta(minutes=10))
    long_s = 2700.0
    await _passes(rig.sweep(), clock, synced + dt.timedelta(seconds=long_s))
    due = await _jobs(store)
    assert due[read_on_notice] == synced + dt.timedelta(seconds=long_s)
    for mailbox in (swept, notified_before):
        assert due[mailbox] == _grid(mailbox, synced, long_s), mailbox

    # The rule itself: never later than a bound after the last success, whatever the notice.
    at = cadence.phase(TENANT, swept)
    for notified in (None, synced, notice, synced - dt.timedelta(seconds=61), synced + _S):
        when = cadence.due(synced, bound_s=long_s, at=at, notified_at=notified)
        assert synced < when <= synced + dt.timedelta(seconds=long_s)
    assert cadence.read_on_notice(synced, synced - dt.timedelta(seconds=cadence.NOTICE_S))
    assert not cadence.read_on_notice(synced, synced - dt.timedelta(seconds=cadence.NOTICE_S + 1))
    # A notification after the last success asks for a read still to come: not this one.
    assert not cadence.read_on_notice(synced, synced + _S)


async def test_a_calendar_whose_notifications_stopped_is_reread_within_the_tenants_bound(
    rig: Rig,
) -> None:
    store, clock = rig.store, rig.clock
    [room] = await add_tenant(store, rooms=1)
    tenant = await store.update_tenant(TENANT, {"staleness_bound_s": 5400})
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    synced = clock.now()
    await _synced_at(store, synced)
    await rig.listening([room])
    # However long the healthy bound, the subscription's silence costs no more than the
    # tenant's bound: nothing arrives any more, and the sweep still reads the calendar.
    sweep = rig.sweep(healthy_bound_s=86_400)
    await _passes(sweep, clock, synced + bound)
    [read] = (await _jobs(store)).values()
    assert synced < read <= synced + bound - dt.timedelta(seconds=SHORT_S)

    # That read found a change no notification announced: the silence duty counts it, and
    # the calendar is on the short bound from then on, silent or not yet.
    for judgement in ({"unannounced": 1}, {"unannounced": 2, "silent_since": read}):
        previous = read
        clock.set(previous)  # the read happened at its instant
        await store.transaction(lambda conn: conn.execute(sa.delete(jobs)))
        await _synced_at(store, previous)
        await rig.judged([room], baseline=previous, **judgement)
        await _passes(sweep, clock, previous + dt.timedelta(seconds=SHORT_S))
        [read] = (await _jobs(store)).values()
        assert read == _grid(room, previous, SHORT_S)


async def test_a_sweep_refresh_is_a_delta_round_and_leaves_a_resync_one(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    quiet, missed = await add_tenant(store, rooms=2)
    registry = CollectorRegistry()
    sweep = Sweep(
        store=store,
        queue=queue,
        inbox=inbox,
        clock=clock,
        bound_s=SHORT_S,
        metrics=SyncMetrics.of(registry),
    )
    assert await sweep.run_once() == 2
    assert _asked(registry) == {"overdue": 2}  # never read
    # Graph said it dropped notifications of one calendar: its job becomes a full resync,
    # which the sweep's job does not undo.
    await inbox.append([InboxItem(TENANT, missed, kind=NotificationKind.MISSED)])
    assert await sweep.run_once() == 0
    clock.advance(dt.timedelta(seconds=5))
    claimed = {job.mailbox: job.full_resync for job in await queue.claim("w", 10)}
    assert claimed == {quiet: False, missed: True}
