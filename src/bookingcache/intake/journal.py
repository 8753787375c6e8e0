"""The intake journal: on a SQLite deployment, where accepted notifications become durable
before their 202, and from where they move into the inbox and the job queue right after, off
the request path (docs/intake.md, "The journal").

A webhook request's notifications join the current *round*: everything accepted during one
turn of the event loop. At the end of the turn the round is written to the journal as one
record with one ``write``, and only then are its requests answered. A record in the operating
system's page cache survives the process being killed, which is the same promise SQLite's own
write-ahead log gives with ``synchronous=NORMAL`` (the database's default setting here): neither
is synced to the disk at every commit, both survive a crash of the process. So a 202 still
means "stored", and the database's transaction, with its thread hand-off, leaves the request
path.

With ``fsync`` (``BOOKINGCACHE_FSYNC``; the database then runs with ``synchronous=FULL``) a
round's requests are answered only once its record is also flushed to the disk
(``fdatasync``, on a thread of its own so the event loop goes on). The flushes are shared like
the writes: the rounds written while one flush runs wait for the next, which covers them all.

The ingest then stores the records: after ``ingest_interval_s`` (gathering what else arrives
meanwhile) it appends all waiting records' notifications to the inbox in ONE transaction, which
also records the journal's *mark*: the segment and byte offset up to which the journal is
stored. A record is stored exactly once: its notifications and the mark move together.

Layout, next to the database file: ``<database>-intake/slot-<n>/``. A process takes the first
slot whose ``lock`` file it can lock (``flock``) and keeps it while it runs, so processes on
one database never share a file. A slot holds numbered segment files (``<n>.log``); a process
starts a new one when it takes the slot, when the current one passes ``segment_bytes`` and
after a failed write. Segments the mark has passed are deleted.

A record is ``<length: u32><crc32: u32><received at: f64 Unix seconds>`` (little-endian) and
the payload, JSON: ``[[tenant, mailbox, kind, via, subscriptionId, changeType, details],
...]``. Reading stops at the first record that is incomplete or fails its checksum:
its write never finished, so none of its requests was answered.

Recovery, when the journal opens: the records after each slot's mark, in the process's own
slot and in every slot no running process holds (a process that was killed), are stored before
the service takes requests. After that, every ``orphan_check_s``, the slots no running process
holds are looked at again (another process on the database may have been killed meanwhile);
``bookingcache worker`` does the same without a slot of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import random
import sqlite3
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge

from bookingcache.clock import Clock
from bookingcache.intake.errors import NotPersisted
from bookingcache.metricsets import MetricSet
from bookingcache.store.sql import SqlStore
from bookingcache.sync.model import InboxItem, NotificationKind
from bookingcache.sync.queue import JobQueue, JournalMark

log = logging.getLogger(__name__)

# A record's header: the payload's length and CRC-32, and when its notifications arrived
# (seconds since the epoch).
_HEADER = struct.Struct("<IId")
# What the database raises for a transaction it refuses as invalid, which retrying cannot fix.
_REFUSED = (sqlite3.IntegrityError, sa.exc.IntegrityError)
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_SEGMENT_SUFFIX = ".log"
_MAX_RECORD_BYTES = 256 * 1024 * 1024


def journal_directory(database_file: Path) -> Path:
    """Where the journal of the SQLite database in ``database_file`` lives."""
    return database_file.with_name(database_file.name + "-intake")


@dataclass(slots=True)
class Record:
    """A written record: its notifications, when they arrived, and where it ends."""

    segment: int
    end: int
    received_at: dt.datetime
    items: list[InboxItem]


def encode(items: Sequence[InboxItem], received_at: dt.datetime) -> bytes:
    """A record of ``items``: the header, then the JSON list of the notifications, each
    ``[tenant, mailbox, kind, via, subscriptionId, changeType, details]`` (``details``:
    Graph's resource and id, or null)."""
    payload = _ENCODER.encode(
        [
            [
                item.tenant_id,
                item.mailbox,
                item.kind,
                item.via,
                item.subscription_id,
                item.change_type,
                item.payload,
            ]
            for item in items
        ]
    ).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload), received_at.timestamp()) + payload


def decode(payload: bytes) -> list[InboxItem]:
    """A record's payload back as notifications (``ValueError`` if it is not one)."""
    return [
        InboxItem(
            tenant_id,
            mailbox,
            NotificationKind(kind),
            "alt2" if via == "alt2" else "alt1",
            subscription_id,
            change_type,
            details or None,
        )
        for tenant_id, mailbox, kind, via, subscription_id, change_type, details in json.loads(
            payload
        )
    ]


def read_segment(path: Path, segment: int, start: int = 0) -> Iterator[Record]:
    """The complete records of a segment file from byte ``start`` on, read one at a time (a
    segment is not held in memory whole)."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        file.seek(start)
        offset = start
        while offset + _HEADER.size <= size:
            length, checksum, stamp = _HEADER.unpack(file.read(_HEADER.size))
            if length > _MAX_RECORD_BYTES:
                break
            payload = file.read(length)
            if len(payload) < length or zlib.crc32(payload) != checksum:
                break
            try:
                received_at = dt.datetime.fromtimestamp(stamp, dt.UTC)
                items = decode(payload)
            except (ValueError, KeyError, TypeError, OverflowError, OSError) as exc:
                log.error("intake journal %s: unreadable record at byte %d: %s", path, offset, exc)
                break
            offset += _HEADER.size + length
            yield Record(segment, offset, received_at, items)
    if offset < size:
        # An unfinished write (the process died in it, or the write failed): none of its
        # requests was answered 202.
        log.warning(
            "intake journal %s: %d bytes after byte %d are not a complete record; ignored",
            path,
            size - offset,
            offset,
        )


class JournalMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog = Gauge(
            "bookingcache_intake_journal_backlog",
            "Notifications in the intake journal not yet stored in the inbox",
            registry=registry,
        )
        self.records = Counter(
            "bookingcache_intake_journal_records",
            "Journal records (one per event-loop turn that accepted notifications) stored",
            registry=registry,
        )
        self.stored = Counter(
            "bookingcache_intake_journal_stored_notifications",
            "Notifications moved from the journal into the inbox",
            registry=registry,
        )
        self.recovered = Counter(
            "bookingcache_intake_journal_recovered_notifications",
            "Notifications stored from the journals of stopped or killed processes",
            registry=registry,
        )
        self.failures = Counter(
            "bookingcache_intake_journal_ingest_failures",
            "Failed attempts to move journal records into the inbox (retried)",
            registry=registry,
        )
        self.dropped = Counter(
            "bookingcache_intake_journal_dropped_notifications",
            "Journal notifications the database refused as invalid (tenant deleted since, or a "
            "record it refuses)",
            registry=registry,
        )


class IntakeJournal:
    def __init__(
        self,
        directory: Path,
        *,
        store: SqlStore,
        queue: JobQueue,
        clock: Clock,
        metrics: JournalMetrics,
        ingest_interval_s: float = 0.01,
        max_backlog: int = 200_000,
        max_round_items: int = 20_000,
        segment_bytes: int = 16 * 1024 * 1024,
        retry_s: tuple[float, float] = (0.05, 5.0),
        orphan_check_s: float = 5.0,
        fsync: bool = False,
    ) -> None:
        self.directory = directory
        self._store = store
        self._queue = queue
        self._clock = clock
        self.metrics = metrics
        self._interval = ingest_interval_s
        self._max_backlog = max_backlog
        self._max_round_items = max_round_items
        self._segment_bytes = segment_bytes
        self._retry_s = retry_s
        self._orphan_check_s = orphan_check_s
        self._fsync = fsync
        # With ``fsync``: requests whose records are written but not yet flushed, the task
        # flushing, and its thread.
        self._unflushed: list[asyncio.Future[None]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._flusher: concurrent.futures.ThreadPoolExecutor | None = None
        self.slot = ""
        self._slot_dir: Path | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = 0
        self._offset = 0
        self._deleted_below = 0
        # This turn's round: its notifications and the futures of its requests.
        self._round: list[InboxItem] = []
        self._waiters: list[asyncio.Future[None]] = []
        # Written records not yet stored, oldest first, and their notification count.
        self._pending: list[Record] = []
        self._backlog = 0
        self._wake = asyncio.Event()
        # Set while someone waits for everything to be stored: no gathering pause.
        self._hurry = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._orphan_task: asyncio.Task[None] | None = None
        self._closed = True

    # --- life cycle ---------------------------------------------------------------------------
    async def open(self) -> int:
        """Take a slot, store what journals of stopped processes hold, and start the ingest.
        Returns how many notifications were recovered."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.slot, self._slot_dir, self._lock_fd = _take_slot(self.directory)
        try:
            marks = await self._queue.journal_marks()
            # New segments are numbered past everything the slot held and its mark names.
            numbers = [number for number, _ in _segments(self._slot_dir)]
            highest = max([marks.get(self.slot, (0, 0))[0], *numbers])
            recovered = await self._recover(self._slot_dir, self.slot, marks)
            recovered += await self.recover_orphans()
            self._segment = highest + 1
            self._open_segment()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._closed = False
        self._task = asyncio.create_task(self._ingest_loop(), name="intake journal ingest")
        self.watch_orphans()
        if recovered:
            log.info("intake journal: stored %d notifications left by earlier runs", recovered)
        return recovered

    async def close(self, *, timeout_s: float = 10.0) -> None:
        """Stop taking notifications, store what is written (for up to ``timeout_s``; what is
        left stays in the journal for the next start) and release the slot."""
        await self._stop_watching()
        if self._closed and self._task is None:
            return
        self._closed = True
        if self._round:
            self._write_round()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
            self._flusher = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def drain(self) -> None:
        """Wait until every notification written so far is stored in the inbox (without the
        ingest's gathering pause)."""
        self._hurry.set()
        try:
            while self._round or self._pending:
                self._idle.clear()
                self._wake.set()
                await self._idle.wait()
        finally:
            self._hurry.clear()

    @property
    def backlog(self) -> int:
        return self._backlog

    # --- the request path ---------------------------------------------------------------------
    def append(self, items: Sequence[InboxItem]) -> asyncio.Future[None]:
        """A future done once ``items`` are written to the journal (``NotPersisted`` if they
        could not be). Every request of one event-loop turn shares one write."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._closed:
            done.set_exception(NotPersisted("the service is stopping; send them again"))
        elif self._backlog + len(self._round) + len(items) > self._max_backlog:
            done.set_exception(
                NotPersisted("the notification backlog is full; send the notifications again")
            )
        else:
            if not self._round:
                loop.call_soon(self._write_round)
            self._round.extend(items)
            self._waiters.append(done)
        return done

    def _write_round(self) -> None:
        items, waiters = self._round, self._waiters
        if not items:
            return
        self._round, self._waiters = [], []
        received_at = self._clock.now()
        try:
            if self._fd is None or self._offset >= self._segment_bytes:
                self._next_segment()
            record = encode(items, received_at)
            self._write(record)
        except (OSError, ValueError, TypeError) as exc:
            log.error("intake journal: could not write %d notifications: %s", len(items), exc)
            with contextlib.suppress(OSError):
                self._next_segment()  # whatever part was written ends its segment
            _refuse(waiters, exc)
            return
        self._offset += len(record)
        self._pending.append(Record(self._segment, self._offset, received_at, items))
        self._backlog += len(items)
        if self._fsync:
            self._unflushed.extend(waiters)
            if self._flush_task is None:
                self._flush_task = asyncio.create_task(
                    self._flush_loop(), name="intake journal flush"
                )
        else:
            _answer(waiters)
        self._wake.set()

    async def _flush_loop(self) -> None:
        """Flush the current segment to disk until no written request waits for it, then
        answer those requests (``NotPersisted`` if the flush failed)."""
        loop = asyncio.get_running_loop()
        if self._flusher is None:
            self._flusher = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="bookingcache-journal-flush"
            )
        try:
            while self._unflushed:
                waiters, self._unflushed = self._unflushed, []
                try:
                    if self._fd is None:
                        raise OSError("no journal segment is open")
                    # A duplicate: the segment may be closed (a new one started) meanwhile.
                    fd = os.dup(self._fd)
                    try:
                        await loop.run_in_executor(self._flusher, os.fdatasync, fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    log.error("intake journal: could not flush %s to disk: %s", self.slot, exc)
                    # Whatever was written to this file since is refused too: after a failed
                    # flush, a later one may succeed without the lost pages being on disk.
                    waiters += self._unflushed
                    self._unflushed = []
                    _refuse(waiters, exc)
                    with contextlib.suppress(OSError):
                        self._next_segment()
                    continue
                _answer(waiters)
        finally:
            self._flush_task = None

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _open_segment(self) -> None:
        assert self._slot_dir is not None
        path = self._slot_dir / f"{self._segment}{_SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._offset = 0
        if self._fsync:
            # The new file's name must be on disk too, or a flushed record may have no file.
            _flush_directory(self._slot_dir)

    def _next_segment(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._fsync and self._unflushed:
                    # The records written to it so far wait for a flush of this file; the
                    # flush loop only ever flushes the current segment.
                    try:
                        os.fdatasync(fd)
                    except OSError as exc:
                        log.error("intake journal: could not flush %s to disk: %s", self.slot, exc)
                        waiters, self._unflushed = self._unflushed, []
                        _refuse(waiters, exc)
            finally:
                os.close(fd)
        self._segment += 1
        self._open_segment()

    # --- the ingest ---------------------------------------------------------------------------
    async def _ingest_loop(self) -> None:
        """One transaction per ``ingest_interval_s`` at most, holding every record written
        since the last one (up to ``max_round_items`` notifications)."""
        delay = self._retry_s[0]
        while True:
            if not self._pending:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._interval > 0 and not self._closed and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._interval)
            if not self._pending:
                continue
            batch = self._take(self._pending)
            try:
                await self._store_records(batch, self.slot)
            except asyncio.CancelledError:
                self._pending[:0] = batch
                raise
            except Exception as exc:
                self._pending[:0] = batch
                self.metrics.failures.inc()
                log.warning("intake journal: storing %d records failed: %s", len(batch), exc)
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
                delay = min(delay * 2, self._retry_s[1])
                continue
            delay = self._retry_s[0]
            self._backlog -= sum(len(record.items) for record in batch)
            self.metrics.records.inc(len(batch))
            self.metrics.backlog.set(self._backlog)
            if batch[-1].segment != self._deleted_below:
                self._delete_before(batch[-1].segment)

    def _take(self, records: list[Record]) -> list[Record]:
        """Remove and return the first records of ``records`` that one transaction stores:
        at least one, and no more than ``max_round_items`` notifications unless one record
        alone holds more."""
        count = 0
        taken = 0
        for record in records:
            if taken and count + len(record.items) > self._max_round_items:
                break
            count += len(record.items)
            taken += 1
        batch = records[:taken]
        del records[:taken]
        return batch

    async def _store_records(self, batch: Sequence[Record], slot: str) -> int:
        """Store ``batch``'s notifications and move ``slot``'s mark past its last record, in
        one transaction; returns how many were stored.

        A batch the database refuses as invalid (a constraint; not a failure, which is raised
        and retried) is stored without the notifications of tenants deleted since they came.
        If it is still refused, each record is stored on its own and the records refused
        again are dropped, logged and counted: one bad record must not stop the intake."""
        last = batch[-1]
        mark = (slot, last.segment, last.end)
        items = [item for record in batch for item in record.items]
        try:
            await self._queue.append_inbox(items, received_at=last.received_at, mark=mark)
        except _REFUSED:
            kept = await self._without_deleted_tenants(items)
            self.metrics.dropped.inc(len(items) - len(kept))
            try:
                await self._append_or_mark(kept, last.received_at, mark)
            except _REFUSED:
                return await self._store_one_by_one(batch, slot)
            items = kept
        self.metrics.stored.inc(len(items))
        return len(items)

    async def _store_one_by_one(self, batch: Sequence[Record], slot: str) -> int:
        stored = 0
        for record in batch:
            mark = (slot, record.segment, record.end)
            kept = await self._without_deleted_tenants(record.items, quiet=True)
            try:
                await self._append_or_mark(kept, record.received_at, mark)
            except _REFUSED as exc:
                log.error(
                    "intake journal: the database refuses %d notifications (segment %d, up to "
                    "byte %d of %s); dropped: %s",
                    len(kept),
                    record.segment,
                    record.end,
                    slot,
                    exc,
                )
                await self._queue.set_journal_mark(mark)
                self.metrics.dropped.inc(len(kept))
                continue
            self.metrics.stored.inc(len(kept))
            stored += len(kept)
        return stored

    async def _append_or_mark(
        self, items: list[InboxItem], received_at: dt.datetime, mark: JournalMark
    ) -> None:
        if items:
            await self._queue.append_inbox(items, received_at=received_at, mark=mark)
        else:
            await self._queue.set_journal_mark(mark)

    async def _without_deleted_tenants(
        self, items: list[InboxItem], *, quiet: bool = False
    ) -> list[InboxItem]:
        tenants = {tenant.id for tenant in await self._store.list_tenants()}
        kept = [item for item in items if item.tenant_id in tenants]
        if len(kept) < len(items) and not quiet:
            log.warning(
                "intake journal: %d notifications of deleted tenants dropped",
                len(items) - len(kept),
            )
        return kept

    def _delete_before(self, segment: int) -> None:
        """Delete this process's segments the mark has passed."""
        assert self._slot_dir is not None
        self._deleted_below = segment
        for number, path in _segments(self._slot_dir):
            if number < segment:
                path.unlink(missing_ok=True)

    # --- recovery -----------------------------------------------------------------------------
    async def _recover(self, slot_dir: Path, slot: str, marks: dict[str, tuple[int, int]]) -> int:
        """Store the records of a slot (locked by this process) after its mark; delete its
        segments. Returns how many notifications were stored."""
        mark_segment, mark_offset = marks.get(slot, (0, 0))
        recovered = 0
        segments = _segments(slot_dir)
        for number, path in segments:
            if number < mark_segment:
                continue  # stored already
            start = mark_offset if number == mark_segment else 0
            # Stored as read, in transactions of at most ``max_round_items`` notifications
            # (a record alone may hold more), so memory holds one transaction's worth.
            batch: list[Record] = []
            count = 0
            for record in read_segment(path, number, start):
                if batch and count + len(record.items) > self._max_round_items:
                    recovered += await self._store_records(batch, slot)
                    batch, count = [], 0
                batch.append(record)
                count += len(record.items)
            if batch:
                recovered += await self._store_records(batch, slot)
        for _, path in segments:
            path.unlink(missing_ok=True)
        self.metrics.recovered.inc(recovered)
        return recovered

    async def recover_orphans(self) -> int:
        """Store the records left in every slot that no running process holds (its process
        was killed, or stopped before all was stored) and that is not this journal's own.
        Returns how many notifications were stored. Needs no slot of its own, so a process
        without a journal (``bookingcache worker``) can call it."""
        if not self.directory.is_dir():
            return 0
        recovered = 0
        for slot_dir in sorted(self.directory.glob("slot-*")):
            if slot_dir == self._slot_dir or not slot_dir.is_dir() or not _segments(slot_dir):
                continue
            lock_fd = _try_lock(slot_dir)
            if lock_fd is None:
                continue  # a running process's slot
            try:
                # Read under the lock: whoever held the slot before may have moved its mark.
                marks = await self._queue.journal_marks()
                recovered += await self._recover(slot_dir, slot_dir.name, marks)
            finally:
                os.close(lock_fd)
        return recovered

    def watch_orphans(self) -> None:
        """Call ``recover_orphans`` every ``orphan_check_s`` from now on, until ``close``."""
        if self._orphan_check_s > 0 and self._orphan_task is None:
            self._orphan_task = asyncio.create_task(
                self._watch_orphans(), name="intake journal orphans"
            )

    async def _watch_orphans(self) -> None:
        while True:
            await asyncio.sleep(self._orphan_check_s)
            try:
                recovered = await self.recover_orphans()
            except Exception as exc:  # the next look tries again
                self.metrics.failures.inc()
                log.warning("intake journal: storing a stopped process's journal failed: %s", exc)
                continue
            if recovered:
                log.info(
                    "intake journal: stored %d notifications left by a stopped process", recovered
                )

    async def _stop_watching(self) -> None:
        task, self._orphan_task = self._orphan_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _answer(waiters: Sequence[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _refuse(waiters: Sequence[asyncio.Future[None]], cause: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            error = NotPersisted("the notifications could not be stored; send them again")
            error.__cause__ = cause
            waiter.set_exception(error)


def _flush_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segments(slot_dir: Path) -> list[tuple[int, Path]]:
    """A slot's segment files with their numbers, oldest first."""
    found = []
    for path in slot_dir.glob(f"*{_SEGMENT_SUFFIX}"):
        stem = path.name[: -len(_SEGMENT_SUFFIX)]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def _try_lock(slot_dir: Path) -> int | None:
    """The open, locked ``lock`` file of ``slot_dir``; None if another process holds it."""
    fd = os.open(slot_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _take_slot(directory: Path) -> tuple[str, Path, int]:
    number = 0
    while True:
        slot_dir = directory / f"slot-{number}"
        slot_dir.mkdir(exist_ok=True)
        fd = _try_lock(slot_dir)
        if fd is not None:
            return slot_dir.name, slot_dir, fd
        number += 1
