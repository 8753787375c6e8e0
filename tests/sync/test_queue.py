"""The durable inbox and coalescing job queue, on every engine under test."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from bookingcache.clock import FixedClock
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.store.jobs import Job
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import BRIEF_CLAIM_DEPTH, SqlJobQueue
from bookingcache.store.sql.schema import inbox_batches, jobs, subscriptions
from bookingcache.store.sql.store import SqlStore
from tests.support.tenants import TENANT, add_tenant


def _burst(mailbox: str) -> list[InboxItem]:
    # A room booking as Exchange reports it: 1 created + 3 updated.
    return [
        InboxItem(TENANT, mailbox, change_type=change)
        for change in ("created", "updated", "updated", "updated")
    ]


async def _entries(store: SqlStore) -> list[dict[str, Any]]:
    """Every stored notification as its inbox batch lists it, oldest first."""
    async with store.read() as conn:
        batches = (await conn.execute(sa.select(inbox_batches).order_by(inbox_batches.c.id))).all()
    for batch in batches:
        assert batch._mapping["count"] == len(batch.notifications)
    return [entry for batch in batches for entry in batch.notifications]


async def _claimed(
    store: SqlStore,
    inbox: SqlInbox,
    queue: SqlJobQueue,
    clock: FixedClock,
    *kinds: NotificationKind,
    worker: str = "w1",
) -> tuple[str, Job]:
    """A tenant's first room notified (one notification of each of ``kinds``, in turn; one
    change when none is given), and a second later its job claimed by ``worker``: the room and
    the job."""
    [room, *_] = await add_tenant(store)
    for kind in kinds or (NotificationKind.CHANGE,):
        await inbox.append([InboxItem(TENANT, room, kind)])
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim(worker, 10)
    return room, job


async def test_a_burst_becomes_one_job_due_after_the_coalescing_window(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    assert await inbox.append(_burst(room)) == 1  # four notifications, one calendar
    clock.advance(dt.timedelta(milliseconds=100))
    second = clock.now()
    # Still inside the window: moves nothing, but the job now stands for the later burst too.
    assert await inbox.append(_burst(room)) == 1
    assert await queue.claim("w1", 10) == []
    clock.advance(dt.timedelta(milliseconds=100))
    [job] = await queue.claim("w1", 10)
    assert (job.tenant_id, job.mailbox, job.full_resync) == (TENANT, room, False)
    assert job.last_notified_at == second
    assert await queue.claim("w2", 10) == []
    entries = await _entries(store)
    changes = [entry["changeType"] for entry in entries]
    assert changes == ["created", "updated", "updated", "updated"] * 2
    assert {(entry["kind"], entry["mailbox"]) for entry in entries} == {("change", room)}
    assert await queue.busy_calendars() == {(TENANT, room)}
    assert await queue.complete(job)
    assert await queue.busy_calendars() == set()
    assert len(await _entries(store)) == 8  # the inbox keeps its record of what came in


async def test_a_round_is_stored_as_one_inbox_row_per_tenant_and_source(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    rooms_a = await add_tenant(store, "alpha", rooms=2)
    [room_b] = await add_tenant(store, "beta", rooms=1)
    created = InboxItem(
        "alpha",
        rooms_a[0],
        change_type="created",
        subscription_id="sub-a0",
        payload={"resource": "Users/a0/Events/AAMk1", "id": "AAMk1"},
    )
    items = [
        created,
        InboxItem("beta", room_b, via="alt2", change_type="updated"),
        InboxItem("alpha", rooms_a[1], NotificationKind.RESYNC, via="alt2"),
        InboxItem("alpha", rooms_a[0], change_type="updated", subscription_id="sub-a0"),
    ]
    assert await inbox.append(items) == 3
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(inbox_batches))).all()
        pending = (await conn.execute(sa.select(jobs))).all()
    assert {row.received_at for row in rows} == {clock.now()}
    assert {
        (row.tenant_id, row.source): (row._mapping["count"], row.notifications) for row in rows
    } == {
        ("alpha", "alt1"): (
            2,
            [
                {
                    "kind": "change",
                    "subscriptionId": "sub-a0",
                    "mailbox": rooms_a[0],
                    "changeType": "created",
                    "resource": "Users/a0/Events/AAMk1",
                    "id": "AAMk1",
                },
                {
                    "kind": "change",
                    "subscriptionId": "sub-a0",
                    "mailbox": rooms_a[0],
                    "changeType": "updated",
                },
            ],
        ),
        ("alpha", "alt2"): (1, [{"kind": "resync", "mailbox": rooms_a[1]}]),
        ("beta", "alt2"): (1, [{"kind": "change", "mailbox": room_b, "changeType": "updated"}]),
    }
    # Each calendar's pending job carries the time of its newest change notification; a
    # backlog hand-over is no change notification.
    assert {(job.mailbox, job.kind, job.last_notified_at) for job in pending} == {
        (rooms_a[0], "refresh", clock.now()),
        (rooms_a[1], "full_resync", None),
        (room_b, "refresh", clock.now()),
    }


async def test_notifications_that_keep_arriving_give_one_refresh_within_the_window(
    store: SqlStore, clock: FixedClock
) -> None:
    [room, other, _] = await add_tenant(store)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0.05, coalesce_window_s=0.3)
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    # A lone burst: due after the short gather delay.
    await inbox.append(_burst(other))
    clock.advance(dt.timedelta(milliseconds=49))
    assert await queue.claim("w1", 10) == []
    clock.advance(dt.timedelta(milliseconds=1))
    [lone] = await queue.claim("w1", 10)
    assert lone.mailbox == other
    assert queue.held_until is None
    # A stream, a notification every 40 ms: held back while it flows, for at most 300 ms.
    began = clock.now()
    for _ in range(7):
        await inbox.append([InboxItem(TENANT, room, change_type="updated")])
        clock.advance(dt.timedelta(milliseconds=40))
        assert await queue.claim("w1", 10) == []
        if clock.now() - began >= dt.timedelta(milliseconds=50):  # due, but held
            assert queue.held_until is not None
            assert queue.held_until > clock.now()
    assert clock.now() - began == dt.timedelta(milliseconds=280)
    await inbox.append([InboxItem(TENANT, room, change_type="updated")])
    assert await queue.claim("w1", 10) == []
    # Held until the window's end, which comes before the stream could pause.
    assert queue.held_until == began + dt.timedelta(milliseconds=300)
    clock.advance(dt.timedelta(milliseconds=20))
    [job] = await queue.claim("w1", 10)  # the window since the first notification is over
    assert job.mailbox == room
    assert job.last_notified_at == began + dt.timedelta(milliseconds=280)
    assert await queue.complete(job)
    assert await queue.busy_calendars() == {(TENANT, other)}  # only the lone burst's is left
    assert await queue.complete(lone)
    assert await queue.busy_calendars() == set()
    # A short stream that pauses: claimed once it has been quiet for the gather delay.
    for _ in range(3):
        await inbox.append([InboxItem(TENANT, room, change_type="updated")])
        clock.advance(dt.timedelta(milliseconds=30))
    assert await queue.claim("w1", 10) == []
    assert queue.held_until == clock.now() + dt.timedelta(milliseconds=20)
    clock.advance(dt.timedelta(milliseconds=20))
    [paused] = await queue.claim("w1", 10)
    assert paused.id != job.id
    assert paused.last_notified_at == clock.now() - dt.timedelta(milliseconds=50)
    assert await queue.complete(paused)
    assert await queue.busy_calendars() == set()
    assert len(await _entries(store)) == 4 + 8 + 3


async def test_notification_during_a_running_refresh_causes_one_more(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    [room, other, _] = await add_tenant(store)
    await inbox.append(_burst(room))
    clock.advance(dt.timedelta(seconds=1))
    [running] = await queue.claim("w1", 10)
    assert await inbox.append([*_burst(room), InboxItem(TENANT, other)]) == 2
    clock.advance(dt.timedelta(seconds=1))
    # The calendar's refresh runs: only the other calendar can be claimed.
    [other_job] = await queue.claim("w2", 10)
    assert other_job.mailbox == other
    assert await queue.complete(running)
    # The second burst's refresh and the other calendar's are still to be done.
    assert await queue.busy_calendars() == {(TENANT, room), (TENANT, other)}
    [again] = await queue.claim("w2", 10)
    assert again.mailbox == room
    assert again.id != running.id
    assert running.last_notified_at is not None
    assert again.last_notified_at is not None
    assert again.last_notified_at > running.last_notified_at
    assert await queue.claim("w3", 10) == []  # exactly one more refresh
    assert await queue.complete(again)
    assert await queue.complete(other_job)
    assert await queue.busy_calendars() == set()


async def test_a_crashed_workers_job_is_retaken_after_its_lease(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    _, lost = await _claimed(store, inbox, queue, clock, worker="crashed")
    clock.advance(dt.timedelta(seconds=29))
    assert await queue.claim("w2", 10) == []
    clock.advance(dt.timedelta(seconds=2))
    [retaken] = await queue.claim("w2", 10)
    assert retaken.id == lost.id
    assert retaken.lease != lost.lease
    # The crashed worker comes back: its claim is fenced off.
    assert not await queue.complete(lost)
    assert not await queue.retry(lost, defer_s=1, error="late")
    assert await queue.complete(retaken)
    assert await queue.busy_calendars() == set()


async def test_retry_defers_and_honours_backoff_then_gives_up(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    room, job = await _claimed(store, inbox, queue, clock)
    assert await queue.retry(job, defer_s=5, error="Throttled: 429")
    # A notification during the backoff does not cut it short.
    await inbox.append([InboxItem(TENANT, room)])
    clock.advance(dt.timedelta(seconds=4))
    assert await queue.claim("w1", 10) == []
    clock.advance(dt.timedelta(seconds=1))
    [second] = await queue.claim("w1", 10)
    assert second.attempts == 1
    assert await queue.retry(second, defer_s=1, error="boom")
    clock.advance(dt.timedelta(seconds=1))
    [third] = await queue.claim("w1", 10)
    assert third.attempts == 2
    assert not await queue.retry(third, defer_s=1, error="boom")  # max_attempts = 3
    clock.advance(dt.timedelta(seconds=10))
    assert await queue.claim("w1", 10) == []
    assert await queue.busy_calendars() == set()
    # The next notification starts afresh.
    await inbox.append([InboxItem(TENANT, room)])
    clock.advance(dt.timedelta(seconds=1))
    [fresh] = await queue.claim("w1", 10)
    assert fresh.attempts == 0


async def test_retry_folds_into_a_pending_job_that_arrived_meanwhile(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    room, job = await _claimed(store, inbox, queue, clock, NotificationKind.MISSED)
    assert job.full_resync
    await inbox.append([InboxItem(TENANT, room)])
    assert await queue.retry(job, defer_s=3, error="timeout")
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(jobs.c.kind, jobs.c.attempts))).all()
    assert [(row.kind, row.attempts) for row in rows] == [("full_resync", 1)]
    clock.advance(dt.timedelta(seconds=2))
    assert await queue.claim("w1", 10) == []
    clock.advance(dt.timedelta(seconds=1))
    [again] = await queue.claim("w1", 10)
    assert again.full_resync


async def test_release_hands_a_job_back_due_now(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    _, job = await _claimed(store, inbox, queue, clock)
    assert await queue.release(job)
    [again] = await queue.claim("w2", 10)
    assert again.id == job.id
    assert again.attempts == 0


async def test_claim_respects_limit_and_excluded_tenants(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    rooms_a = await add_tenant(store, "alpha", rooms=4)
    rooms_b = await add_tenant(store, "beta", rooms=2)
    await inbox.append([InboxItem("alpha", room) for room in rooms_a])
    await inbox.append([InboxItem("beta", room) for room in rooms_b])
    clock.advance(dt.timedelta(seconds=1))
    only_beta = await queue.claim("w1", 10, exclude_tenants=["alpha"])
    assert sorted(job.mailbox for job in only_beta) == sorted(rooms_b)
    two = await queue.claim("w1", 2)
    assert len(two) == 2
    assert {job.tenant_id for job in two} == {"alpha"}


async def test_lifecycle_events_mark_subscriptions_and_force_full_resync(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    rooms = await add_tenant(store)
    rows = [
        {
            "tenant_id": TENANT,
            "mailbox": mailbox,
            "subscription_id": f"sub-{index}",
            "status": "active",
            "needs_action": "none",
            "updated_at": clock.now(),
        }
        for index, mailbox in enumerate(rooms)
    ]
    await store.transaction(lambda conn: conn.execute(subscriptions.insert(), rows))
    enqueued = await inbox.append(
        [
            InboxItem(TENANT, None, NotificationKind.MISSED, subscription_id="sub-0"),
            InboxItem(TENANT, None, NotificationKind.SUBSCRIPTION_REMOVED, subscription_id="sub-1"),
            InboxItem(
                TENANT, None, NotificationKind.REAUTHORIZATION_REQUIRED, subscription_id="sub-2"
            ),
            InboxItem(
                TENANT, None, NotificationKind.REAUTHORIZATION_REQUIRED, subscription_id="sub-1"
            ),
        ]
    )
    async with store.read() as conn:
        result = await conn.execute(
            sa.select(subscriptions.c.mailbox, subscriptions.c.needs_action)
        )
        actions = {row.mailbox: row.needs_action for row in result}
    # recreate is not downgraded to renew; reauthorization alone refreshes nothing.
    assert actions == {rooms[0]: "none", rooms[1]: "recreate", rooms[2]: "renew"}
    assert enqueued == 2
    # Stored with the mailbox their subscription names.
    assert await _entries(store) == [
        {"kind": "missed", "subscriptionId": "sub-0", "mailbox": rooms[0]},
        {"kind": "subscriptionRemoved", "subscriptionId": "sub-1", "mailbox": rooms[1]},
        {"kind": "reauthorizationRequired", "subscriptionId": "sub-2", "mailbox": rooms[2]},
        {"kind": "reauthorizationRequired", "subscriptionId": "sub-1", "mailbox": rooms[1]},
    ]
    clock.advance(dt.timedelta(seconds=1))
    claimed = await queue.claim("w1", 10)
    assert {(job.mailbox, job.full_resync) for job in claimed} == {
        (rooms[0], True),
        (rooms[1], True),
    }


async def test_a_change_upgrades_nothing_but_missed_upgrades_a_pending_refresh(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    _, job = await _claimed(
        store, inbox, queue, clock, NotificationKind.CHANGE, NotificationKind.MISSED
    )
    assert job.full_resync


async def test_unknown_mailboxes_are_kept_in_the_inbox_but_refresh_nothing(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    await add_tenant(store)
    stranger = "stranger@elsewhere.example"
    assert await inbox.append([InboxItem(TENANT, stranger, change_type="updated")]) == 0
    assert await _entries(store) == [
        {"kind": "change", "mailbox": stranger, "changeType": "updated"}
    ]
    clock.advance(dt.timedelta(seconds=1))
    assert await queue.claim("w1", 10) == []
    assert await queue.busy_calendars() == set()


async def test_one_round_of_many_calendars_tenants_and_kinds(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    # More calendars than one statement's list takes, two tenants, strangers among them, and
    # full resyncs and plain changes mixed: every cached calendar gets one job of its kind.
    many = await add_tenant(store, rooms=620)
    other = await add_tenant(store, "fabrikam", rooms=2)
    stranger = "stranger@elsewhere.example"
    round_ = [InboxItem(TENANT, mailbox, change_type="updated") for mailbox in many]
    round_ += [InboxItem(TENANT, many[0], NotificationKind.MISSED)]
    round_ += [InboxItem("fabrikam", other[0], change_type="created")]
    round_ += [InboxItem("fabrikam", other[1], NotificationKind.MISSED)]
    round_ += [InboxItem(TENANT, stranger, change_type="updated")]
    arrived = clock.now()
    assert await inbox.append(round_) == 622
    clock.advance(dt.timedelta(seconds=1))
    claimed = await queue.claim("w1", 1000)
    by_calendar = {(job.tenant_id, job.mailbox): job for job in claimed}
    assert set(by_calendar) == {(TENANT, m) for m in many} | {("fabrikam", m) for m in other}
    full = {key for key, job in by_calendar.items() if job.full_resync}
    assert full == {(TENANT, many[0]), ("fabrikam", other[1])}
    # Only change notifications stamp the job with the time of the newest change.
    assert by_calendar["fabrikam", other[1]].last_notified_at is None
    assert by_calendar["fabrikam", other[0]].last_notified_at == arrived
    assert by_calendar[TENANT, many[0]].last_notified_at == arrived


async def test_sweep_enqueue_skips_busy_calendars(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    rooms = await add_tenant(store)
    await inbox.append([InboxItem(TENANT, rooms[0])])
    later = clock.now() + dt.timedelta(seconds=60)
    created = await queue.enqueue({(TENANT, mailbox): later for mailbox in rooms})
    assert created == 2
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim("w1", 10)
    assert job.mailbox == rooms[0]
    # A notification pulls a far-off sweep job forward to the coalescing window.
    await inbox.append([InboxItem(TENANT, rooms[1])])
    clock.advance(dt.timedelta(seconds=1))
    [pulled] = await queue.claim("w1", 10)
    assert pulled.mailbox == rooms[1]


async def test_a_requested_refresh_pulls_in_a_queued_one_and_follows_a_running_one(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock
) -> None:
    queued, running, idle = await add_tenant(store)
    later = clock.now() + dt.timedelta(minutes=15)
    await queue.enqueue({(TENANT, queued): later, (TENANT, running): clock.now()})
    [claimed] = await queue.claim("w1", 10)
    assert claimed.mailbox == running
    wanted = [(TENANT, m) for m in (queued, running, idle, "stranger@contoso.example")]
    # A calendar the service does not cache is left out; the three it caches get a job.
    assert await queue.request_refresh(wanted, due=clock.now()) == 3
    found = await queue.claim("w2", 10)
    # The one due in 15 minutes is due now, and the idle one has a job; the running one's
    # successor waits for it to end.
    assert sorted(job.mailbox for job in found) == sorted([queued, idle])
    assert not any(job.full_resync for job in found)
    assert await queue.complete(claimed)
    [after] = await queue.claim("w2", 10)
    assert after.mailbox == running
    for job in (*found, after):
        assert await queue.complete(job)
    # A full resync asked for upgrades a queued refresh, and never pushes it later.
    await queue.enqueue({(TENANT, queued): clock.now()})
    await queue.request_refresh([(TENANT, queued)], due=later, full_resync=True)
    [upgraded] = await queue.claim("w3", 10)
    assert (upgraded.mailbox, upgraded.full_resync) == (queued, True)


async def test_notifications_keep_the_time_they_arrived_not_the_time_they_were_stored(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    arrived = clock.now()
    clock.advance(dt.timedelta(milliseconds=10))  # stored by a later commit round
    assert await inbox.append(_burst(room), received_at=arrived)
    async with store.read() as conn:
        received = await conn.scalar(sa.select(inbox_batches.c.received_at))
        job = (await conn.execute(sa.select(jobs))).one()
    assert received == arrived
    assert job.last_notified_at == arrived
    assert job.due_at == arrived + dt.timedelta(seconds=queue.coalesce_s)
    # A lifecycle event takes the subscriptions path and is stored all the same.
    removed = InboxItem(TENANT, room, NotificationKind.SUBSCRIPTION_REMOVED, subscription_id="s")
    await inbox.append([removed])
    assert len(await _entries(store)) == 5


async def test_a_claim_reports_how_long_the_oldest_due_job_it_left_has_waited(
    store: SqlStore, queue: SqlJobQueue, clock: FixedClock
) -> None:
    rooms = await add_tenant(store, rooms=3)
    first_due = clock.now()
    await queue.enqueue({(TENANT, rooms[0]): first_due})
    clock.advance(dt.timedelta(seconds=10))
    await queue.enqueue({(TENANT, room): clock.now() for room in rooms[1:]})
    await queue.enqueue({(TENANT, rooms[0]): clock.now()})  # coalesces: keeps its due time
    later = clock.now() + dt.timedelta(minutes=5)
    clock.advance(dt.timedelta(seconds=20))
    assert await queue.claim("w1", 0) == []
    assert queue.oldest_due is None  # no claim ran
    [job] = await queue.claim("w1", 1)
    assert job.mailbox == rooms[0]  # oldest first
    assert queue.depth == 2
    assert queue.oldest_due == first_due + dt.timedelta(seconds=10)
    await queue.claim("w1", 10)
    assert queue.depth == 0
    assert queue.oldest_due is None
    # A job due later (a retry's backoff) does not wait yet.
    [room] = rooms[:1]
    assert await queue.complete(job)
    await queue.enqueue({(TENANT, room): later})
    assert await queue.claim("w1", 10) == []
    assert (queue.depth, queue.oldest_due) == (1, None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_short_claims_and_completions_run_on_the_loops_thread(
    store: SqlStore, queue: SqlJobQueue, inbox: SqlInbox, clock: FixedClock
) -> None:
    """A claim of a short queue and a completion are brief: with the writer thread idle they
    run on the event loop's thread. Once a claim has left more than ``BRIEF_CLAIM_DEPTH`` jobs
    pending, the next claim (which reads the whole queue) goes to the writer thread."""
    rooms = await add_tenant(store, rooms=BRIEF_CLAIM_DEPTH + 20)
    await inbox.append([InboxItem(TENANT, room) for room in rooms])
    clock.advance(dt.timedelta(seconds=1))
    threads: list[int] = []

    def on_jobs(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if " jobs" in statement:
            threads.append(threading.get_ident())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", on_jobs)
    try:
        here = threading.get_ident()
        first = await queue.claim("w1", 10)
        assert len(first) == 10
        assert queue.depth > BRIEF_CLAIM_DEPTH
        assert set(threads) == {here}
        threads.clear()
        assert await queue.complete(first[0])
        assert set(threads) == {here}
        threads.clear()
        assert len(await queue.claim("w1", 10)) == 10
        assert threads
        assert here not in threads
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", on_jobs)
