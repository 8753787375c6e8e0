"""The intake journal (SQLite): a notification is in the journal before its request is
answered, reaches the inbox once, and survives a process that stops without storing it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from bookingcache.clock import FixedClock
from bookingcache.errors import StoreUnavailable
from bookingcache.intake.errors import NotPersisted
from bookingcache.intake.journal import (
    IntakeJournal,
    JournalMetrics,
    encode,
    journal_directory,
    read_segment,
)
from bookingcache.store.schema import inbox_batches, intake_journal_marks, jobs, subscriptions
from bookingcache.store.sql import SqlStore
from bookingcache.store.subscriptions import SubscriptionRegistry
from bookingcache.sync.model import InboxItem, NotificationKind
from bookingcache.sync.queue import JobQueue

from ..conftest import opened_store
from ..sync.conftest import TENANT, add_tenant


@pytest.fixture
async def store(database_url: str, clock: FixedClock) -> AsyncIterator[SqlStore]:
    """The test database on its own, without a service (and its journal) in front; SQLite
    only, since the journal is the SQLite deployment's."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the intake journal is SQLite's")
    async with opened_store(database_url, clock) as opened:
        yield opened


@pytest.fixture
def directory(store: SqlStore) -> Path:
    database = store.engine.url.database
    assert database
    return journal_directory(Path(database))


@pytest.fixture
def queue(store: SqlStore, clock: FixedClock) -> JobQueue:
    return JobQueue(store, clock=clock, coalesce_s=0.025)


Opener = Callable[..., IntakeJournal]


@pytest.fixture
async def journals(
    store: SqlStore, queue: JobQueue, clock: FixedClock, directory: Path
) -> AsyncIterator[Opener]:
    """Builds journals on the test database (each with its own metrics); closes them after."""
    made: list[IntakeJournal] = []

    def make(**options: Any) -> IntakeJournal:
        journal = IntakeJournal(
            directory,
            store=store,
            queue=queue,
            clock=clock,
            metrics=JournalMetrics(CollectorRegistry()),
            **{"ingest_interval_s": 0.0, **options},
        )
        made.append(journal)
        return journal

    yield make
    for journal in made:
        await journal.close(timeout_s=1)


def _changes(mailbox: str, count: int, *, start: int = 0) -> list[InboxItem]:
    return [
        InboxItem(
            TENANT,
            mailbox,
            NotificationKind.CHANGE,
            "alt1",
            f"sub-{mailbox}",
            "updated",
            {"resource": f"Users/{mailbox}/Events/e{start + index}", "id": f"e{start + index}"},
        )
        for index in range(count)
    ]


async def _stored(store: SqlStore) -> list[dict[str, Any]]:
    async with store.read() as connection:
        rows = (await connection.execute(sa.select(inbox_batches))).all()
    return [entry for row in rows for entry in row.notifications]


async def _marks(store: SqlStore) -> dict[str, tuple[int, int]]:
    async with store.read() as connection:
        rows = (await connection.execute(sa.select(intake_journal_marks))).all()
    return {row.slot: (row.segment, row.byte_offset) for row in rows}


def _abandon(journal: IntakeJournal) -> None:
    """What a killed process leaves: the written segments, nothing stored after, no lock."""
    assert journal._task is not None and journal._lock_fd is not None
    journal._task.cancel()
    journal._task = None
    if journal._orphan_task is not None:
        journal._orphan_task.cancel()
        journal._orphan_task = None
    journal._closed = True
    if journal._fd is not None:
        os.close(journal._fd)
        journal._fd = None
    os.close(journal._lock_fd)
    journal._lock_fd = None


async def test_a_round_is_in_the_journal_before_it_is_answered_and_then_in_the_inbox(
    store: SqlStore, journals: Opener, directory: Path
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals(ingest_interval_s=60)  # the ingest waits: only the journal holds them
    await journal.open()
    requests = [_changes(room, 2, start=2 * index) for index in range(5)]
    # Five requests in one turn of the event loop: one shared write.
    await asyncio.gather(*(journal.append(items) for items in requests))
    [segment] = sorted((directory / journal.slot).glob("*.log"))
    [record] = list(read_segment(segment, int(segment.stem)))
    assert [item.payload for item in record.items] == [
        item.payload for items in requests for item in items
    ]
    assert await _stored(store) == []
    assert journal.backlog == 10

    await journal.drain()
    entries = await _stored(store)
    assert [entry["id"] for entry in entries] == [f"e{index}" for index in range(10)]
    assert entries[0] == {
        "kind": "change",
        "subscriptionId": f"sub-{room}",
        "mailbox": room,
        "changeType": "updated",
        "resource": f"Users/{room}/Events/e0",
        "id": "e0",
    }
    assert await _marks(store) == {journal.slot: (record.segment, record.end)}
    assert journal.backlog == 0
    async with store.read() as connection:
        pending = (await connection.execute(sa.select(jobs.c.mailbox))).scalars().all()
    assert pending == [room]


async def test_what_a_killed_process_wrote_is_stored_by_the_next_start_exactly_once(
    store: SqlStore, journals: Opener
) -> None:
    [room, other, *_] = await add_tenant(store)
    first = journals()
    await first.open()
    await first.append(_changes(room, 3))
    await first.drain()  # these three are stored ...
    first._interval = 60.0
    await first.append(_changes(other, 2, start=3))
    await asyncio.sleep(0)
    _abandon(first)  # ... these two only written when the process dies

    second = journals()
    assert await second.open() == 2
    entries = await _stored(store)
    assert sorted(entry["id"] for entry in entries) == ["e0", "e1", "e2", "e3", "e4"]
    assert second.slot == first.slot  # the dead process's slot is free again
    assert second.metrics.recovered._value.get() == 2

    third = journals()
    await second.close()
    assert await third.open() == 0  # nothing is stored twice


async def test_recovery_stores_a_long_journal_in_bounded_transactions(
    store: SqlStore, journals: Opener
) -> None:
    [room, *_] = await add_tenant(store)
    first = journals(ingest_interval_s=60)
    await first.open()
    for index in range(12):  # twelve rounds: twelve records of two
        await first.append(_changes(room, 2, start=2 * index))
    _abandon(first)

    second = journals(max_round_items=5)
    assert await second.open() == 24
    # Two records (four notifications) per transaction, each an inbox row of its own.
    async with store.read() as connection:
        counts = (await connection.execute(sa.select(inbox_batches.c.count))).scalars().all()
    assert counts == [4] * 6
    entries = await _stored(store)
    assert [entry["id"] for entry in entries] == [f"e{index}" for index in range(24)]
    assert await _marks(store) == {second.slot: (1, first._offset)}


async def test_a_running_process_keeps_its_slot_and_a_dead_ones_is_recovered(
    store: SqlStore, journals: Opener, directory: Path
) -> None:
    [room, *_] = await add_tenant(store)
    alive = journals(ingest_interval_s=60)
    await alive.open()
    await alive.append(_changes(room, 1, start=100))
    dead = journals(ingest_interval_s=60)
    await dead.open()
    assert {alive.slot, dead.slot} == {"slot-0", "slot-1"}
    await dead.append(_changes(room, 4))
    _abandon(dead)

    starting = journals()
    assert await starting.open() == 4  # the dead one's four, not the live one's
    assert starting.slot == dead.slot
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1", "e2", "e3"]
    await alive.drain()
    assert len(await _stored(store)) == 5


async def test_a_running_process_stores_what_a_process_killed_later_left(
    store: SqlStore, journals: Opener
) -> None:
    [room, *_] = await add_tenant(store)
    alive = journals(ingest_interval_s=60, orphan_check_s=0.02)
    await alive.open()
    await alive.append(_changes(room, 1, start=100))
    dead = journals(ingest_interval_s=60)
    await dead.open()
    await dead.append(_changes(room, 3))
    _abandon(dead)
    # No process starts: the running one finds the dead one's slot on its own ...
    for _ in range(500):
        if len(await _stored(store)) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1", "e2"]
    assert alive.metrics.recovered._value.get() == 3
    assert not list((alive.directory / dead.slot).glob("*.log"))
    # ... and leaves its own records to its ingest.
    assert alive.backlog == 1
    await alive.drain()
    assert len(await _stored(store)) == 4


async def test_a_journal_that_is_not_open_recovers_only_the_slots_of_stopped_processes(
    store: SqlStore, journals: Opener
) -> None:
    """What ``bookingcache worker`` does: it takes no slot of its own."""
    [room, *_] = await add_tenant(store)
    alive = journals(ingest_interval_s=60)
    await alive.open()
    await alive.append(_changes(room, 2, start=100))
    dead = journals(ingest_interval_s=60)
    await dead.open()
    await dead.append(_changes(room, 3))
    _abandon(dead)
    worker = journals()
    assert await worker.recover_orphans() == 3
    assert await worker.recover_orphans() == 0
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1", "e2"]
    assert alive.backlog == 2 and list((alive.directory / alive.slot).glob("*.log"))


async def test_an_unfinished_record_at_the_end_is_ignored(
    store: SqlStore, journals: Opener, directory: Path, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    slot = directory / "slot-0"
    slot.mkdir(parents=True, exist_ok=True)
    whole = encode(_changes(room, 2), clock.now())
    torn = encode(_changes(room, 2, start=2), clock.now())
    (slot / "7.log").write_bytes(whole + torn[: len(torn) // 2])
    journal = journals()
    assert await journal.open() == 2
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1"]
    assert not (slot / "7.log").exists()
    # New segments are numbered after everything seen, so the mark can never point past them.
    await journal.append(_changes(room, 1, start=9))
    assert journal._segment == 8


async def test_notifications_of_a_deleted_tenant_are_dropped_and_the_rest_stored(
    store: SqlStore, journals: Opener
) -> None:
    [room, *_] = await add_tenant(store)
    [gone, *_] = await add_tenant(store, "gone")
    journal = journals(ingest_interval_s=60)
    await journal.open()
    doomed = [InboxItem("gone", gone, change_type="updated", subscription_id="s")]
    await asyncio.gather(journal.append(_changes(room, 2)), journal.append(doomed))
    await store.delete_tenant("gone")
    await journal.drain()
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1"]
    assert journal.metrics.dropped._value.get() == 1
    assert journal.backlog == 0


async def test_a_failing_database_is_retried_and_loses_nothing(
    store: SqlStore, queue: JobQueue, journals: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    [room, *_] = await add_tenant(store)
    real = queue.append_inbox
    failures = 0

    async def flaky(*args: Any, **kwargs: Any) -> int:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise StoreUnavailable("the database failed: disk I/O error")
        return await real(*args, **kwargs)

    monkeypatch.setattr(queue, "append_inbox", flaky)
    journal = journals(retry_s=(0.01, 0.02))
    await journal.open()
    await journal.append(_changes(room, 3))
    await asyncio.wait_for(journal.drain(), 5)
    assert failures == 2
    assert journal.metrics.failures._value.get() == 2
    assert len(await _stored(store)) == 3


async def test_a_full_backlog_or_a_closed_journal_refuses_with_503(
    store: SqlStore, journals: Opener
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals(ingest_interval_s=60, max_backlog=3)
    await journal.open()
    await journal.append(_changes(room, 3))
    with pytest.raises(NotPersisted, match="backlog"):
        await journal.append(_changes(room, 1, start=3))
    await journal.close()
    # Closing stored what was written.
    assert len(await _stored(store)) == 3
    with pytest.raises(NotPersisted, match="stopping"):
        await journal.append(_changes(room, 1, start=4))


async def test_full_segments_are_left_behind_and_deleted_once_stored(
    store: SqlStore, journals: Opener, directory: Path
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals(segment_bytes=100)  # a record each
    await journal.open()
    for index in range(6):
        await journal.append(_changes(room, 1, start=index))
        await journal.drain()
    segments = sorted(int(path.stem) for path in (directory / journal.slot).glob("*.log"))
    # Every record filled a segment; those the mark has passed are gone.
    assert len(segments) <= 2
    assert max(segments) >= 6
    assert len(await _stored(store)) == 6


async def test_lifecycle_events_take_the_subscription_path(
    store: SqlStore, journals: Opener, clock: FixedClock
) -> None:
    [room, *_] = await add_tenant(store)
    registry = SubscriptionRegistry(store, clock=clock)
    await registry.record(TENANT, room, "sub-1", expires_at=clock.now() + dt.timedelta(days=2))
    journal = journals()
    await journal.open()
    await journal.append(
        [InboxItem(TENANT, None, NotificationKind.SUBSCRIPTION_REMOVED, "alt1", "sub-1")]
    )
    await journal.drain()
    async with store.read() as connection:
        action = await connection.scalar(sa.select(subscriptions.c.needs_action))
        kind = await connection.scalar(sa.select(jobs.c.kind).where(jobs.c.mailbox == room))
    assert (action, kind) == ("recreate", "full_resync")


async def test_a_record_the_database_refuses_is_dropped_and_the_rest_stored(
    store: SqlStore, journals: Opener
) -> None:
    [room, *_] = await add_tenant(store)
    async with store.write() as connection:
        # A constraint of the database's own that one record breaks, as no retry can mend.
        await connection.execute(
            sa.text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON inbox_batches "
                "WHEN NEW.notifications LIKE '%poison%' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    journal = journals(ingest_interval_s=60)
    await journal.open()
    poison = InboxItem(TENANT, room, change_type="updated", payload={"id": "poison"})
    await journal.append(_changes(room, 2))
    await journal.append([poison])
    await journal.append(_changes(room, 1, start=2))
    await asyncio.wait_for(journal.drain(), 5)
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1", "e2"]
    assert journal.metrics.dropped._value.get() == 1
    assert journal.metrics.failures._value.get() == 0
    [(segment, offset)] = (await _marks(store)).values()
    assert (segment, offset) == (journal._segment, journal._offset)


class _Flushes:
    """``os.fdatasync`` seen from the test: which files were flushed, and which of the
    requests written so far had been answered at the time; ``fail`` makes the next ones fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bool]]] = []
        self.watched: list[asyncio.Future[None]] = []
        self.fail = 0
        # Cleared: the flushes wait for it (on the journal's flush thread).
        self.go = threading.Event()
        self.go.set()
        self._real = os.fdatasync

    def __call__(self, fd: int) -> None:
        self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), [f.done() for f in self.watched]))
        self.go.wait(5)
        if self.fail:
            self.fail -= 1
            raise OSError(5, "Input/output error")
        self._real(fd)


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> _Flushes:
    seen = _Flushes()
    monkeypatch.setattr(os, "fdatasync", seen)
    return seen


async def test_with_fsync_requests_are_answered_only_once_their_record_is_on_disk(
    store: SqlStore, journals: Opener, flushes: _Flushes
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals(ingest_interval_s=60, fsync=True)
    await journal.open()
    requests = [journal.append(_changes(room, 1, start=index)) for index in range(3)]
    flushes.watched = requests
    await asyncio.gather(*requests)
    # One round, one write, one flush of the slot's segment: no request was answered before.
    [(path, answered)] = flushes.calls
    assert Path(path).parent.name == journal.slot and path.endswith(".log")
    assert answered == [False, False, False]

    # Rounds written while a flush runs wait for the next one, which covers them all.
    flushes.go.clear()
    first = journal.append(_changes(room, 1, start=3))
    while len(flushes.calls) < 2:
        await asyncio.sleep(0.001)
    second = journal.append(_changes(room, 1, start=4))
    await asyncio.sleep(0.01)
    third = journal.append(_changes(room, 1, start=5))
    await asyncio.sleep(0.01)
    assert not (first.done() or second.done() or third.done())
    flushes.go.set()
    await asyncio.gather(first, second, third)
    assert len(flushes.calls) == 3
    await journal.drain()
    assert len(await _stored(store)) == 6


async def test_with_fsync_a_failed_flush_answers_503_and_the_next_round_is_flushed(
    store: SqlStore, journals: Opener, flushes: _Flushes, directory: Path
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals(fsync=True)
    await journal.open()
    flushes.fail = 1
    with pytest.raises(NotPersisted, match="could not be stored"):
        await journal.append(_changes(room, 1))
    # The failed segment is left for a new one; the next request is flushed and answered.
    await journal.append(_changes(room, 1, start=1))
    first, second = flushes.calls
    assert first[0] != second[0]
    await journal.drain()
    # What was written before the failure is stored anyway (a retry of it is harmless).
    assert sorted(entry["id"] for entry in await _stored(store)) == ["e0", "e1"]


async def test_with_fsync_a_failed_flush_also_refuses_what_was_written_meanwhile(
    store: SqlStore, journals: Opener, flushes: _Flushes
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals(ingest_interval_s=60, fsync=True)
    await journal.open()
    flushes.fail = 1
    flushes.go.clear()
    first = journal.append(_changes(room, 1))
    while not flushes.calls:
        await asyncio.sleep(0.001)
    # Written to the same file while its flush runs (and then fails): after a failed flush a
    # later one may succeed without the lost pages, so this is refused too.
    second = journal.append(_changes(room, 1, start=1))
    await asyncio.sleep(0.01)
    flushes.go.set()
    for request in (first, second):
        with pytest.raises(NotPersisted):
            await request
    await journal.append(_changes(room, 1, start=2))
    assert len(flushes.calls) == 2


async def test_without_fsync_nothing_is_flushed(
    store: SqlStore, journals: Opener, flushes: _Flushes
) -> None:
    [room, *_] = await add_tenant(store)
    journal = journals()
    await journal.open()
    await journal.append(_changes(room, 2))
    await journal.drain()
    assert flushes.calls == []
    assert len(await _stored(store)) == 2
