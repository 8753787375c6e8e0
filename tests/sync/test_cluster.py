"""Cluster duties and claims on every engine under test, on a pinned clock: leases with fencing
tokens, a process that lost its lease acting on nothing, a restart taking back its previous
incarnation's claims at once, a silent peer's claims released well before their lease, and one
read where an expired claim and a pending job meet."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest

from bookingcache.clock import FixedClock, SystemClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.notifications import InboxItem
from bookingcache.store.duties import (
    CONVERGE,
    SILENCE,
    SWEEP,
    TAKEOVER_MARGIN_S,
    DutyKeeper,
    LeaseLost,
)
from bookingcache.store.dutystate import SilenceRecord
from bookingcache.store.jobs import ClaimLost
from bookingcache.store.sql.cluster import SqlCluster
from bookingcache.store.sql.dutystate import SqlDutyState
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.sweep import Sweep
from tests.support.tenants import TENANT, add_tenant
from tests.support.waiting import until

LEASE_S = 15.0
RENEW_S = 5.0


Clusters = Callable[[], SqlCluster]


@pytest.fixture
async def clusters(store: SqlStore, clock: FixedClock) -> AsyncIterator[Clusters]:
    """New ``SqlCluster``s, one per process the test plays; their sessions end with the test
    (a process's death is ``close()``: on PostgreSQL its liveness lock goes with its session)."""
    made: list[SqlCluster] = []

    def make() -> SqlCluster:
        made.append(SqlCluster(store, clock=clock))
        return made[-1]

    yield make
    for cluster in made:
        await cluster.close()


def _keeper(clusters: Clusters, clock: FixedClock, name: str) -> DutyKeeper:
    return DutyKeeper(
        clusters(),
        clock=clock,
        incarnation=f"{name}@1",
        instance_id=name,
        lease_s=LEASE_S,
        renew_s=RENEW_S,
        heartbeat_s=1.0,
        peer_dead_after_s=5.0,
    )


async def _wanting_the_sweep(
    clusters: Clusters, clock: FixedClock
) -> tuple[DutyKeeper, DutyKeeper]:
    """Processes "a" and "b", registered and wanting the sweep; neither has tended yet."""
    first, second = _keeper(clusters, clock, "a"), _keeper(clusters, clock, "b")
    for keeper in (first, second):
        keeper.want([SWEEP])
        await keeper.register()
    return first, second


def _later(clock: FixedClock, seconds: float) -> None:
    clock.advance(dt.timedelta(seconds=seconds))


async def test_one_holder_per_duty_and_a_new_token_at_each_takeover(
    store: SqlStore, clock: FixedClock, clusters: Clusters
) -> None:
    cluster = clusters()
    first = await cluster.acquire(SWEEP, "a@1", lease_s=LEASE_S)
    assert first is not None
    assert first.token == 1
    assert await cluster.acquire(SWEEP, "b@1", lease_s=LEASE_S) is None
    # Renewals keep the token and push the expiry.
    _later(clock, RENEW_S)
    renewed = await cluster.acquire(SWEEP, "a@1", lease_s=LEASE_S)
    assert renewed is not None
    assert renewed.token == 1
    assert renewed.expires_at == clock.now() + dt.timedelta(seconds=LEASE_S)
    # The holder stops renewing: within the lease nobody else gets it, after it someone does.
    _later(clock, LEASE_S)
    assert await cluster.acquire(SWEEP, "b@1", lease_s=LEASE_S) is None
    _later(clock, 0.001)
    taken = await cluster.acquire(SWEEP, "b@1", lease_s=LEASE_S)
    assert taken is not None
    assert taken.token == 2
    # The former holder's lease is fenced off: it can renew nothing.
    assert await cluster.renew(renewed, lease_s=LEASE_S) is None
    assert await cluster.acquire(SWEEP, "a@1", lease_s=LEASE_S) is None
    assert [(lease.duty, lease.holder, lease.token) for lease in await cluster.leases()] == [
        (SWEEP, "b@1", 2)
    ]


async def test_a_holder_stopped_past_its_lease_finds_it_lost_before_acting(
    store: SqlStore, clock: FixedClock, clusters: Clusters
) -> None:
    stopped, peer = await _wanting_the_sweep(clusters, clock)
    for keeper in (stopped, peer):
        await keeper.tend()
    assert stopped.holds(SWEEP)
    assert not peer.holds(SWEEP)
    assert await stopped.confirm(SWEEP) is not None
    # "a" is stopped (SIGSTOP): it renews nothing while the peer keeps trying.
    for _ in range(3):
        _later(clock, RENEW_S + 0.1)
        await peer.tend()
    assert peer.holds(SWEEP)
    # "a" resumes (SIGCONT) and is about to act: it must not.
    assert await stopped.confirm(SWEEP) is None
    assert not stopped.holds(SWEEP)
    assert [lease.holder for lease in await peer.cluster.leases()] == ["b@1"]


async def test_a_candidate_tries_again_as_the_holders_lease_runs_out(
    store: SqlStore, clock: FixedClock, clusters: Clusters
) -> None:
    holder, candidate = await _wanting_the_sweep(clusters, clock)
    assert await holder.tend() == RENEW_S  # it holds all it wants: the next renewal
    _later(clock, 1)
    assert await candidate.tend() == RENEW_S  # the lease runs 14 s more, past a renewal
    # The holder stops renewing: the candidate tries again as the lease ends, not a renewal
    # period later.
    _later(clock, 12)
    assert await candidate.tend() == pytest.approx(2 + TAKEOVER_MARGIN_S)
    assert not candidate.holds(SWEEP)
    _later(clock, 2 + TAKEOVER_MARGIN_S)
    assert await candidate.tend() == RENEW_S
    assert candidate.holds(SWEEP)


async def test_a_running_candidate_takes_a_stopped_holders_duty_when_its_lease_ends(
    store: SqlStore,
) -> None:
    """The keeper's own loop, on the system's clock: renewals every 30 s, and a holder whose
    0.5 s lease is not renewed. The candidate holds the duty long before its next renewal."""
    clock = SystemClock()
    stopped = SqlCluster(store, clock=clock)
    candidate = DutyKeeper(
        SqlCluster(store, clock=clock),
        clock=clock,
        incarnation="b@1",
        instance_id="b",
        lease_s=60,
        renew_s=30,
        heartbeat_s=30,
    )
    try:
        assert await stopped.acquire(SWEEP, "a@1", lease_s=0.5) is not None
        candidate.want([SWEEP])
        candidate.launch()
        await until(lambda: candidate.holds(SWEEP), timeout_s=10, what="the duty taken over")
        [lease] = await stopped.leases()
        assert (lease.holder, lease.token) == ("b@1", 2)
    finally:
        await candidate.stop()
        await stopped.close()


async def test_a_lapsed_lease_is_not_acted_on_even_when_nobody_took_it(
    store: SqlStore, clock: FixedClock, clusters: Clusters
) -> None:
    keeper = _keeper(clusters, clock, "a")
    keeper.want([CONVERGE])
    await keeper.register()
    await keeper.tend()
    first = await keeper.confirm(CONVERGE)
    assert first is not None
    _later(clock, LEASE_S + 1)
    assert await keeper.confirm(CONVERGE) is None  # its own clock says the lease lapsed
    await keeper.tend()  # taken again as a free duty: a new token
    again = await keeper.confirm(CONVERGE)
    assert again is not None
    assert again.token == first.token + 1


async def test_a_write_under_a_lost_lease_is_refused_whole(
    store: SqlStore, clock: FixedClock, clusters: Clusters
) -> None:
    [room, *_] = await add_tenant(store)
    cluster, state = clusters(), SqlDutyState(store, clock=clock)
    old = await cluster.acquire(SILENCE, "a@1", lease_s=LEASE_S)
    assert old is not None
    record = SilenceRecord(TENANT, room, baseline=clock.now(), unannounced=1)
    await state.save_silence([record], cursor=7, lease=old)
    _later(clock, LEASE_S + 1)
    new = await cluster.acquire(SILENCE, "b@1", lease_s=LEASE_S)
    assert new is not None
    stale = SilenceRecord(TENANT, room, baseline=clock.now(), unannounced=5)
    with pytest.raises(LeaseLost):
        await state.save_silence([stale], cursor=9, lease=old)
    assert await state.silence_cursor() == 7
    assert (await state.silence_records())[(TENANT, room)].unannounced == 1
    await state.save_silence([stale], cursor=9, lease=new)
    assert await state.silence_cursor() == 9


async def test_a_restart_takes_back_its_previous_incarnations_claims_at_once(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock, clusters: Clusters
) -> None:
    rooms = await add_tenant(store, rooms=3)
    cluster = clusters()
    await cluster.register("worker-1@old", "worker-1")
    await cluster.register("worker-2@x", "worker-2")
    await queue.enqueue({(TENANT, room): clock.now() for room in rooms})
    claimed = await queue.claim("worker-1@old", 2)
    [other] = await queue.claim("worker-2@x", 5)
    assert len(claimed) == 2
    # worker-1 is killed and starts again, long before the claims' lease (30 s) runs out.
    _later(clock, 1)
    assert await queue.claim("worker-2@x", 5) == []
    assert await cluster.register("worker-1@new", "worker-1") == 2
    again = await queue.claim("worker-1@new", 5)
    assert sorted(job.mailbox for job in again) == sorted(job.mailbox for job in claimed)
    # The old incarnation's claims are fenced off; worker-2's claim was not touched.
    assert not await queue.complete(claimed[0])
    assert await queue.complete(other)


async def test_a_silent_peers_claims_are_released_after_a_few_seconds(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock, clusters: Clusters
) -> None:
    [room, *_] = await add_tenant(store, rooms=1)
    cluster, dying = clusters(), clusters()
    await dying.register("dead@1", "dead")
    await cluster.register("live@1", "live")
    await queue.enqueue({(TENANT, room): clock.now()})
    [job] = await queue.claim("dead@1", 1)
    await dying.close()  # killed: on PostgreSQL its session, and its lock, are gone
    _later(clock, 3)
    assert await cluster.heartbeat("live@1", dead_after_s=5) == 0  # not silent long enough
    assert await queue.claim("live@1", 1) == []
    _later(clock, 3)
    assert await cluster.heartbeat("live@1", dead_after_s=5) == 1
    [taken] = await queue.claim("live@1", 1)
    assert taken.mailbox == job.mailbox
    assert not await queue.complete(job)
    assert await queue.complete(taken)


async def test_on_postgresql_a_silent_peer_whose_session_lives_is_not_taken_for_dead(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock, clusters: Clusters
) -> None:
    """A process starved of CPU (or stopped) misses its heartbeats but keeps its session: its
    claims run out with their lease, and nobody re-reads its calendars under it meanwhile. One
    that died is found within two beats once its session is gone."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no sessions to tell a slow process from a dead one")
    [room, other, *_] = await add_tenant(store, rooms=2)
    cluster, slow, dying = clusters(), clusters(), clusters()
    await cluster.register("live@1", "live")
    await slow.register("slow@1", "slow")
    await dying.register("dead@1", "dead")
    await queue.enqueue({(TENANT, room): clock.now(), (TENANT, other): clock.now()})
    [held] = await queue.claim("slow@1", 1)
    [lost] = await queue.claim("dead@1", 1)
    await dying.close()
    _later(clock, 30)
    assert await cluster.heartbeat("live@1", dead_after_s=5, stale_after_s=2) == 1
    [taken] = await queue.claim("live@1", 5)
    assert taken.mailbox == lost.mailbox
    assert await queue.complete(held)  # the slow one finishes its own refresh


async def test_a_refresh_whose_claim_was_taken_over_writes_nothing(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock
) -> None:
    """A process stalled past its claim (its claim retaken by a peer) that resumes with an
    older read must not write it over the peer's newer one."""
    [room, *_] = await add_tenant(store, rooms=1)
    await queue.enqueue({(TENANT, room): clock.now()})
    [stalled] = await queue.claim("stalled@1", 1)
    _later(clock, queue.lease_s + 1)  # stalled past its claim's lease
    [taken] = await queue.claim("live@1", 1)
    start, end = clock.now(), clock.now() + dt.timedelta(days=1)
    newer = BasicEvent("new", start + dt.timedelta(hours=2), start + dt.timedelta(hours=3))
    older = BasicEvent("old", start + dt.timedelta(hours=1), start + dt.timedelta(hours=2))

    async def write(event: BasicEvent, claim: tuple[int, str]) -> None:
        await store.replace_window(
            TENANT, room, window_start=start, window_end=end, events=[event],
            synced_at=clock.now(), claim=claim,
        )  # fmt: skip

    await write(newer, (taken.id, taken.lease))
    synced = (await store.get_calendar(TENANT, room)).last_success_at
    _later(clock, 1)
    with pytest.raises(ClaimLost):
        await write(older, (stalled.id, stalled.lease))
    cached = await store.events_in_window(TENANT, [room], start=start, end=end)
    assert [event.id for event in cached[room]] == ["new"]
    assert (await store.get_calendar(TENANT, room)).last_success_at == synced
    assert await queue.complete(taken)
    # Once the job is done, no claim of it writes any more.
    with pytest.raises(ClaimLost):
        await write(older, (taken.id, taken.lease))


async def test_peers_that_find_the_same_processes_dead_release_them_once_without_deadlock(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock, clusters: Clusters
) -> None:
    """Every live process's heartbeat looks for silent peers; when several find the same dead
    ones at once, each dead process is released by one of them, and none of the heartbeats
    fails (on PostgreSQL, two releases of one process used to deadlock on its rows)."""
    rooms = await add_tenant(store, rooms=12)
    cluster, dying = clusters(), clusters()
    for name in ("dead-a", "dead-b", "dead-c"):
        await dying.register(f"{name}@1", name)
    await queue.enqueue({(TENANT, room): clock.now() for room in rooms})
    for name in ("dead-a", "dead-b", "dead-c"):
        assert len(await queue.claim(f"{name}@1", 4)) == 4
        await cluster.acquire(f"duty-of-{name}", f"{name}@1", lease_s=LEASE_S)
    await dying.close()
    live = [f"live-{n}@1" for n in range(6)]
    for incarnation in live:
        await cluster.register(incarnation, incarnation.split("@")[0])
    _later(clock, 6)
    released = await asyncio.gather(
        *(cluster.heartbeat(incarnation, dead_after_s=5) for incarnation in live)
    )
    assert sum(released) == 12
    assert await cluster.leases() == []
    taken = await queue.claim("live-0@1", 20)
    assert sorted(job.mailbox for job in taken) == sorted(rooms)


async def test_an_expired_claim_and_a_pending_job_give_one_read(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock, clusters: Clusters
) -> None:
    [room, *_] = await add_tenant(store, rooms=1)
    cluster, dying = clusters(), clusters()
    await cluster.register("w@1", "w")
    await dying.register("dead@1", "dead")
    await queue.enqueue({(TENANT, room): clock.now()})
    [dead] = await queue.claim("dead@1", 1)
    await dying.close()
    # A notification while the refresh was in flight: a pending job beside the claim.
    await inbox.append([InboxItem(TENANT, room, change_type="updated")])
    _later(clock, 1)
    assert await queue.claim("w@1", 5) == []  # the claim is live: the pending job waits
    _later(clock, 6)
    assert await cluster.heartbeat("w@1", dead_after_s=5) == 1
    [one] = await queue.claim("w@1", 5)
    assert one.mailbox == room
    assert one.last_notified_at is not None  # it stands for the notification too
    assert await queue.busy_calendars() == {(TENANT, room)}
    assert await queue.complete(one)
    _later(clock, 60)
    assert await queue.claim("w@1", 5) == []  # nothing left: one read, not two
    assert not await queue.complete(dead)


async def test_converge_requests_are_shared_and_debounced(
    store: SqlStore, clock: FixedClock
) -> None:
    await add_tenant(store, rooms=1)
    state = SqlDutyState(store, clock=clock)
    start = clock.now()
    await state.request_converge(TENANT, start + dt.timedelta(seconds=2), restart=True)
    await state.request_converge(TENANT, start + dt.timedelta(seconds=5), restart=False)
    assert (await state.converge_times())[TENANT].due_at == start + dt.timedelta(seconds=2)
    await state.request_converge(TENANT, start + dt.timedelta(seconds=4), restart=True)
    assert (await state.converge_times())[TENANT].due_at == start + dt.timedelta(seconds=4)
    await state.converged(TENANT, start + dt.timedelta(seconds=4))
    times = (await state.converge_times())[TENANT]
    assert (times.last_at, times.due_at) == (start + dt.timedelta(seconds=4), None)
    await state.request_converge("no-such-tenant", start, restart=True)
    assert set(await state.converge_times()) == {TENANT}


async def test_a_reaction_waits_for_the_interval_after_the_last_converge(
    store: SqlStore, clock: FixedClock
) -> None:
    await add_tenant(store, rooms=1)
    state = SqlDutyState(store, clock=clock)
    start = clock.now()
    await state.request_converge(TENANT, start, restart=False, after_last_s=30)
    assert (await state.converge_times())[TENANT].due_at == start  # never converged: at once
    await state.converged(TENANT, start)
    _later(clock, 10)
    await state.request_converge(TENANT, clock.now(), restart=False, after_last_s=30)
    assert (await state.converge_times())[TENANT].due_at == start + dt.timedelta(seconds=30)


async def test_a_sweep_under_a_lost_lease_queues_nothing(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock, clusters: Clusters
) -> None:
    await add_tenant(store, rooms=2)  # never refreshed: stale
    cluster = clusters()
    old = await cluster.acquire(SWEEP, "a@1", lease_s=LEASE_S)
    assert old is not None
    _later(clock, LEASE_S + 1)
    assert await cluster.acquire(SWEEP, "b@1", lease_s=LEASE_S) is not None
    sweep = Sweep(store=store, queue=queue, inbox=inbox, clock=clock)
    with pytest.raises(LeaseLost):
        await sweep.run_once(fence=old)
    assert await queue.busy_calendars() == set()
    [new] = [lease for lease in await cluster.leases() if lease.holder == "b@1"]
    assert await sweep.run_once(fence=new) == 2
