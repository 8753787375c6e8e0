"""The orchestration's rows in the ``subscriptions`` table, on every engine under test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.clock import FixedClock
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.domain.subscriptions import RENEW, ConvergedSubscription
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.schema import calendars, subscriptions
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions, mark_lifecycle
from bookingcache.store.subscriptions import Progress
from tests.support.tenants import add_tenant


def _row(
    mailbox: str,
    sub: str | None,
    status: str,
    *,
    expires_at: dt.datetime | None = None,
    error: str | None = None,
) -> ConvergedSubscription:
    return ConvergedSubscription(mailbox, sub, expires_at, status, error)


async def _renewals_asked(records: SqlSubscriptions, tenant_id: str) -> set[str]:
    marks = await records.marks(tenant_id)
    return {m for m, mark in marks.items() if mark.action == RENEW}


async def test_rows_are_stored_failures_keep_the_old_subscription_and_unwanted_go(
    store: SqlStore, clock: FixedClock
) -> None:
    a, b, c = await add_tenant(store, rooms=3)
    records = SqlSubscriptions(store, clock=clock)
    registry = SqlSubscriptions(store, clock=clock)
    expiry = clock.now() + dt.timedelta(days=6)
    await records.save(
        "contoso",
        [
            _row(a, "sub-a", "created", expires_at=expiry),
            _row(b, "sub-b", "created", expires_at=expiry),
            _row(c, None, "failed", error="Graph answered 403 for this mailbox"),
        ],
        answered={},
    )
    owners = await registry.lookup(["sub-a", "sub-b"])
    assert {s: o.mailbox for s, o in owners.items()} == {"sub-a": a, "sub-b": b}
    by_mailbox = {r.mailbox: r for r in await records.calendars("contoso")}
    assert by_mailbox[a].expires_at == expiry
    assert by_mailbox[c].status == "failed"
    assert "403" in (by_mailbox[c].error or "")

    # A later failure of b keeps its subscription (it may still deliver) with the error.
    clock.advance(dt.timedelta(minutes=1))
    await records.save("contoso", [_row(b, None, "failed", error="throttled")], answered={})
    assert (await records.subscription_ids("contoso"))[b] == "sub-b"
    await records.fail("contoso", [a], "connector unreachable")
    again = {r.mailbox: r for r in await records.calendars("contoso")}
    assert again[a].subscription_id == "sub-a"
    assert again[a].error == "connector unreachable"

    assert sorted(await records.drop_unwanted("contoso", [a.upper()])) == [b, c]
    assert set(await records.subscription_ids("contoso")) == {a}


async def test_a_lifecycle_mark_made_during_a_converge_is_kept(
    store: SqlStore, clock: FixedClock
) -> None:
    [a] = await add_tenant(store, rooms=1)
    records = SqlSubscriptions(store, clock=clock)
    await records.save("contoso", [_row(a, "sub-a", "created")], answered={})
    # A converge reads the marks (none), then calls the connector; the mark comes meanwhile.
    answered = await records.marks("contoso")
    clock.advance(dt.timedelta(seconds=1))
    item = InboxItem(
        tenant_id="contoso",
        subscription_id="sub-a",
        mailbox=a,
        kind=NotificationKind.SUBSCRIPTION_REMOVED,
    )
    await store.transaction(lambda connection: mark_lifecycle(connection, [item], now=clock.now()))
    soon = clock.now() + dt.timedelta(hours=1)
    assert await records.tenants_needing_action(expiring_before=soon) == {"contoso"}
    clock.advance(dt.timedelta(seconds=1))
    # The converge that was out when the mark came answers "unchanged": the mark stays.
    await records.save("contoso", [_row(a, "sub-a", "unchanged")], answered=answered)
    assert await records.tenants_needing_action(expiring_before=soon) == {"contoso"}
    # The next converge reads the mark, and its answer settles it.
    answered = await records.marks("contoso")
    assert {m: mark.action for m, mark in answered.items()} == {a: "recreate"}
    await records.save("contoso", [_row(a, "sub-a2", "recreated")], answered=answered)
    assert await records.tenants_needing_action(expiring_before=soon) == set()
    async with store.read() as connection:
        action = await connection.scalar(sa.select(subscriptions.c.needs_action))
    assert action == "none"


async def test_a_lifecycle_mark_stored_after_the_marks_were_read_is_kept(
    store: SqlStore, clock: FixedClock
) -> None:
    """The inbox stamps a mark when its transaction begins and commits it a little later (a
    group commit round, a slow disk). A converge that read the marks in between could not
    answer it, however early its stamp, so its save must not clear it."""
    [a] = await add_tenant(store, rooms=1)
    records = SqlSubscriptions(store, clock=clock)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0)
    inbox = SqlInbox(store, jobs=queue, clock=clock)
    await records.save("contoso", [_row(a, "sub-a", "created")], answered={})
    stamped = clock.now()
    clock.advance(dt.timedelta(milliseconds=5))
    answered = await records.marks("contoso")
    # Stored after the read, stamped before it.
    clock.set(stamped)
    item = InboxItem(
        tenant_id="contoso",
        subscription_id="sub-a",
        mailbox=None,
        kind=NotificationKind.REAUTHORIZATION_REQUIRED,
    )
    await inbox.append([item], received_at=stamped)
    assert await _renewals_asked(records, "contoso") == {a}
    clock.advance(dt.timedelta(milliseconds=10))
    await records.save("contoso", [_row(a, "sub-a", "unchanged")], answered=answered)
    assert await _renewals_asked(records, "contoso") == {a}
    # A second mark of the same kind, after the next converge read the first: its answer
    # settles neither, because the row changed since the read.
    answered = await records.marks("contoso")
    clock.advance(dt.timedelta(milliseconds=10))
    await inbox.append([item], received_at=clock.now())
    await records.save("contoso", [_row(a, "sub-a", "renewed")], answered=answered)
    assert await _renewals_asked(records, "contoso") == {a}
    # A failed row settles nothing.
    answered = await records.marks("contoso")
    await records.save("contoso", [_row(a, None, "failed", error="throttled")], answered=answered)
    assert await _renewals_asked(records, "contoso") == {a}
    answered = await records.marks("contoso")
    await records.save("contoso", [_row(a, "sub-a", "renewed")], answered=answered)
    assert await _renewals_asked(records, "contoso") == set()


async def test_last_notification_shows_from_the_pending_refresh_and_lives_on_in_the_subscription(
    store: SqlStore, clock: FixedClock
) -> None:
    [a, b] = await add_tenant(store, rooms=2)
    records = SqlSubscriptions(store, clock=clock)
    registry = SqlSubscriptions(store, clock=clock)
    await registry.record("contoso", a, "sub-a", expires_at=None)
    await registry.record("contoso", b, "sub-b", expires_at=None)
    queue = SqlJobQueue(store, clock=clock, coalesce_s=0)
    inbox = SqlInbox(store, jobs=queue, clock=clock)

    async def recorded() -> dict[str, dt.datetime | None]:
        async with store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.mailbox, subscriptions.c.last_notification_at)
            )
            return {row.mailbox: row.last_notification_at for row in rows}

    received = clock.now()
    await inbox.append(
        [
            InboxItem(tenant_id="contoso", mailbox=a, kind=NotificationKind.CHANGE),
            # A lifecycle event is no change notification: b's refresh is due, not notified.
            InboxItem(tenant_id="contoso", mailbox=b, kind=NotificationKind.MISSED),
        ]
    )
    # Before any claim the pending refresh stands for the notification.
    assert await recorded() == {a: None, b: None}
    found = {r.mailbox: r.last_notification_at for r in await records.calendars()}
    assert found == {a: received, b: None}
    assert await records.last_notification("contoso", a) == received
    assert await records.last_notification("contoso", b) is None

    # Claimed and done: the job is gone, the subscription keeps the notification's time.
    clock.advance(dt.timedelta(seconds=1))
    claimed = await queue.claim("w1", 10)
    assert {job.mailbox: job.last_notified_at for job in claimed} == {a: received, b: None}
    assert await recorded() == {a: received, b: None}
    for job in claimed:
        assert await queue.complete(job)
    assert await queue.busy_calendars() == set()
    found = {r.mailbox: r.last_notification_at for r in await records.calendars("contoso")}
    assert found == {a: received, b: None}
    assert await records.last_notification("contoso", a) == received

    # A newer notification shows as soon as it is pending, before its refresh is claimed.
    clock.advance(dt.timedelta(minutes=5))
    later = clock.now()
    await inbox.append([InboxItem(tenant_id="contoso", mailbox=a)])
    assert await recorded() == {a: received, b: None}
    found = {r.mailbox: r.last_notification_at for r in await records.calendars()}
    assert found == {a: later, b: None}
    assert await records.last_notification("contoso", a) == later
    # Many calendars in one read: the same answers, none for a calendar never notified.
    many = await records.last_notifications([("contoso", a), ("contoso", b), ("other", a)])
    assert many == {("contoso", a): later}


async def test_progress_counts_linked_subscribed_and_fresh_rooms_in_the_database(
    store: SqlStore, clock: FixedClock
) -> None:
    a, b, c = await add_tenant(store, rooms=3)
    records = SqlSubscriptions(store, clock=clock)
    hour_ago = {"contoso": clock.now() - dt.timedelta(hours=1), "nobody": clock.now()}
    assert await records.progress(hour_ago) == {
        "contoso": Progress(linked=3),
        "nobody": Progress(),
    }
    expiry = clock.now() + dt.timedelta(days=1)
    await records.save(
        "contoso",
        [
            _row(a, "sub-a", "created", expires_at=expiry),
            _row(b, "sub-b", "created", expires_at=clock.now() + dt.timedelta(minutes=1)),
            _row(c, None, "failed", error="throttled"),
        ],
        answered={},
    )

    def read(mailbox: str, at: dt.datetime) -> Callable[[Connection], object]:
        return lambda connection: connection.execute(
            sa.update(calendars)
            .where(calendars.c.tenant_id == "contoso", calendars.c.mailbox == mailbox)
            .values(last_success_at=at)
        )

    await store.transaction(read(a, clock.now()))
    await store.transaction(read(b, clock.now() - dt.timedelta(hours=2)))
    assert (await records.progress(hour_ago))["contoso"] == Progress(3, 2, 1)
    # b's subscription ends; a's read is older than the bound it is now judged by.
    clock.advance(dt.timedelta(minutes=2))
    later = {"contoso": clock.now()}
    assert await records.progress(later) == {"contoso": Progress(3, 1, 0)}
