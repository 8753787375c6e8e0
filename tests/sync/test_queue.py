"""The durable inbox and coalescing job queue, on every engine under test."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from bookingcache.clock import FixedClock
from bookingcache.store.schema import inbox, jobs, subscriptions
from bookingcache.store.sql import SqlStore
from bookingcache.sync.model import InboxItem, NotificationKind
from bookingcache.sync.queue import JobQueue

from .conftest import TENANT, add_tenant


def _burst(mailbox: str) -> list[InboxItem]:
    # A room booking as Exchange reports it: 1 created + 3 updated.
    return [
        InboxItem(TENANT, mailbox, change_type=change)
        for change in ("created", "updated", "updated", "updated")
    ]


async def _unprocessed(store: SqlStore) -> int:
    async with store.read() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count()).select_from(inbox).where(inbox.c.processed_at.is_(None))
        )
    return int(count or 0)


async def test_a_burst_becomes_one_job_due_after_the_coalescing_window(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    ids = await queue.append_inbox(_burst(room))
    assert len(ids) == 4
    clock.advance(dt.timedelta(milliseconds=100))
    await queue.append_inbox(_burst(room))  # still inside the window: moves nothing
    assert await queue.claim("w1", 10) == []
    clock.advance(dt.timedelta(milliseconds=100))
    [job] = await queue.claim("w1", 10)
    assert (job.tenant_id, job.mailbox, job.full_resync) == (TENANT, room, False)
    assert await queue.claim("w2", 10) == []
    assert await _unprocessed(store) == 8
    assert await queue.complete(job)
    assert await _unprocessed(store) == 0
    assert await queue.busy_calendars() == set()


async def test_notifications_that_keep_arriving_give_one_refresh_within_the_window(
    store: SqlStore, clock: FixedClock
) -> None:
    [room, other, _] = await add_tenant(store)
    queue = JobQueue(store, clock=clock, coalesce_s=0.05, coalesce_window_s=0.3)
    # A lone burst: due after the short gather delay.
    await queue.append_inbox(_burst(other))
    clock.advance(dt.timedelta(milliseconds=49))
    assert await queue.claim("w1", 10) == []
    clock.advance(dt.timedelta(milliseconds=1))
    [lone] = await queue.claim("w1", 10)
    assert lone.mailbox == other and queue.held_until is None
    # A stream, a notification every 40 ms: held back while it flows, for at most 300 ms.
    began = clock.now()
    for _ in range(7):
        await queue.append_inbox([InboxItem(TENANT, room, change_type="updated")])
        clock.advance(dt.timedelta(milliseconds=40))
        assert await queue.claim("w1", 10) == []
        if clock.now() - began >= dt.timedelta(milliseconds=50):  # due, but held
            assert queue.held_until is not None and queue.held_until > clock.now()
    assert clock.now() - began == dt.timedelta(milliseconds=280)
    await queue.append_inbox([InboxItem(TENANT, room, change_type="updated")])
    assert await queue.claim("w1", 10) == []
    # Held until the window's end, which comes before the stream could pause.
    assert queue.held_until == began + dt.timedelta(milliseconds=300)
    clock.advance(dt.timedelta(milliseconds=20))
    [job] = await queue.claim("w1", 10)  # the window since the first notification is over
    assert job.mailbox == room
    assert await queue.complete(job)
    assert await _unprocessed(store) == 4  # only the lone burst's rows are left
    assert await queue.complete(lone)
    # A short stream that pauses: claimed once it has been quiet for the gather delay.
    for _ in range(3):
        await queue.append_inbox([InboxItem(TENANT, room, change_type="updated")])
        clock.advance(dt.timedelta(milliseconds=30))
    assert await queue.claim("w1", 10) == []
    assert queue.held_until == clock.now() + dt.timedelta(milliseconds=20)
    clock.advance(dt.timedelta(milliseconds=20))
    [paused] = await queue.claim("w1", 10)
    assert await queue.complete(paused) and await _unprocessed(store) == 0


async def test_notification_during_a_running_refresh_causes_one_more(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, other, _] = await add_tenant(store)
    await queue.append_inbox(_burst(room))
    clock.advance(dt.timedelta(seconds=1))
    [running] = await queue.claim("w1", 10)
    await queue.append_inbox([*_burst(room), InboxItem(TENANT, other)])
    clock.advance(dt.timedelta(seconds=1))
    # The calendar's refresh runs: only the other calendar can be claimed.
    [other_job] = await queue.claim("w2", 10)
    assert other_job.mailbox == other
    assert await queue.complete(running)
    assert await _unprocessed(store) == 4 + 1  # the second burst and the other calendar's
    [again] = await queue.claim("w2", 10)
    assert again.mailbox == room and again.inbox_upto > running.inbox_upto
    assert await queue.complete(again) and await queue.complete(other_job)
    assert await _unprocessed(store) == 0


async def test_a_crashed_workers_job_is_retaken_after_its_lease(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    await queue.append_inbox([InboxItem(TENANT, room)])
    clock.advance(dt.timedelta(seconds=1))
    [lost] = await queue.claim("crashed", 10)
    clock.advance(dt.timedelta(seconds=29))
    assert await queue.claim("w2", 10) == []
    clock.advance(dt.timedelta(seconds=2))
    [retaken] = await queue.claim("w2", 10)
    assert retaken.id == lost.id and retaken.lease != lost.lease
    # The crashed worker comes back: its claim is fenced off.
    assert not await queue.complete(lost)
    assert not await queue.retry(lost, defer_s=1, error="late")
    assert await queue.complete(retaken)
    assert await _unprocessed(store) == 0


async def test_retry_defers_and_honours_backoff_then_gives_up(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    await queue.append_inbox([InboxItem(TENANT, room)])
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim("w1", 10)
    assert await queue.retry(job, defer_s=5, error="Throttled: 429")
    # A notification during the backoff does not cut it short.
    await queue.append_inbox([InboxItem(TENANT, room)])
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
    await queue.append_inbox([InboxItem(TENANT, room)])
    clock.advance(dt.timedelta(seconds=1))
    [fresh] = await queue.claim("w1", 10)
    assert fresh.attempts == 0


async def test_retry_folds_into_a_pending_job_that_arrived_meanwhile(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    await queue.append_inbox([InboxItem(TENANT, room, NotificationKind.MISSED)])
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim("w1", 10)
    assert job.full_resync
    await queue.append_inbox([InboxItem(TENANT, room)])
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
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    await queue.append_inbox([InboxItem(TENANT, room)])
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim("w1", 10)
    assert await queue.release(job)
    [again] = await queue.claim("w2", 10)
    assert again.id == job.id and again.attempts == 0


async def test_claim_respects_limit_and_excluded_tenants(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    rooms_a = await add_tenant(store, "alpha", rooms=4)
    rooms_b = await add_tenant(store, "beta", rooms=2)
    await queue.append_inbox([InboxItem("alpha", room) for room in rooms_a])
    await queue.append_inbox([InboxItem("beta", room) for room in rooms_b])
    clock.advance(dt.timedelta(seconds=1))
    only_beta = await queue.claim("w1", 10, exclude_tenants=["alpha"])
    assert sorted(job.mailbox for job in only_beta) == sorted(rooms_b)
    two = await queue.claim("w1", 2)
    assert len(two) == 2 and {job.tenant_id for job in two} == {"alpha"}


async def test_lifecycle_events_mark_subscriptions_and_force_full_resync(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    rooms = await add_tenant(store)
    async with store.write() as conn:
        await conn.execute(
            subscriptions.insert(),
            [
                {
                    "tenant_id": TENANT,
                    "mailbox": mailbox,
                    "subscription_id": f"sub-{index}",
                    "status": "active",
                    "needs_action": "none",
                    "updated_at": clock.now(),
                }
                for index, mailbox in enumerate(rooms)
            ],
        )
    await queue.append_inbox(
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
        stored = (
            await conn.execute(sa.select(inbox.c.mailbox, inbox.c.kind, inbox.c.lifecycle_event))
        ).all()
    # recreate is not downgraded to renew; reauthorization alone refreshes nothing.
    assert actions == {rooms[0]: "none", rooms[1]: "recreate", rooms[2]: "renew"}
    assert {(row.mailbox, row.lifecycle_event) for row in stored} == {
        (rooms[0], "missed"),
        (rooms[1], "subscriptionRemoved"),
        (rooms[2], "reauthorizationRequired"),
        (rooms[1], "reauthorizationRequired"),
    }
    clock.advance(dt.timedelta(seconds=1))
    claimed = await queue.claim("w1", 10)
    assert {(job.mailbox, job.full_resync) for job in claimed} == {
        (rooms[0], True),
        (rooms[1], True),
    }


async def test_a_change_upgrades_nothing_but_missed_upgrades_a_pending_refresh(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    await queue.append_inbox([InboxItem(TENANT, room)])
    await queue.append_inbox([InboxItem(TENANT, room, NotificationKind.MISSED)])
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim("w1", 10)
    assert job.full_resync


async def test_unknown_mailboxes_are_kept_in_the_inbox_but_refresh_nothing(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    await add_tenant(store)
    [row_id] = await queue.append_inbox([InboxItem(TENANT, "stranger@elsewhere.example")])
    assert row_id > 0
    clock.advance(dt.timedelta(seconds=1))
    assert await queue.claim("w1", 10) == []
    assert await queue.busy_calendars() == set()


async def test_sweep_enqueue_skips_busy_calendars(
    store: SqlStore, queue: JobQueue, clock: FixedClock
) -> None:
    rooms = await add_tenant(store)
    await queue.append_inbox([InboxItem(TENANT, rooms[0])])
    later = clock.now() + dt.timedelta(seconds=60)
    created = await queue.enqueue({(TENANT, mailbox): later for mailbox in rooms})
    assert created == 2
    clock.advance(dt.timedelta(seconds=1))
    [job] = await queue.claim("w1", 10)
    assert job.mailbox == rooms[0]
    # A notification pulls a far-off sweep job forward to the coalescing window.
    await queue.append_inbox([InboxItem(TENANT, rooms[1])])
    clock.advance(dt.timedelta(seconds=1))
    [pulled] = await queue.claim("w1", 10)
    assert pulled.mailbox == rooms[1]
