"""The change stream's per-process fan-out: room states computed once per change and handed to
every client that follows the room.

One hub per API process follows the change feed (this process's commits at once, PostgreSQL's
notices of other processes' commits at once, and otherwise a read every ``poll_interval`` while
anyone listens), and time passing (a meeting starting or ending, a calendar turning stale, a
local day ending). For each tenant someone follows, it keeps every room's displayed state
(``roomstate.RoomFrame``) and the feed position those states include. A change re-reads the
calendar in the read model, computes the rooms' states once and offers the ones that differ to
the subscribers, whose bounded queues (``subscriber``) the clients' senders drain. No client
costs a database read per change; a tenant nobody follows any more is forgotten.

An event id is a change-feed sequence number and an instant, ``<seq>-<unix ms>``: the client
has been sent every room it follows as of that position and that instant (``subscriber``). The
store makes sequence numbers visible in commit order on both engines (on PostgreSQL each row
gets its number inside its transaction's COMMIT, under a lock held only there:
``store.sql.windows.append_changes``), so once the hub has read up to a position no smaller one
appears later. The in-process signal of a commit carries no number; the hub reads the numbers
from the feed. A client that comes back with the last id it saw (``open`` with
``last_event_id``) is sent the current state of every room it follows that the feed changed
since, each once, in feed order, and of every other room whose state at the id's instant
differs from its state now (time passed: a meeting started or ended, a calendar turned stale),
so it misses no change and is sent none twice; an id the feed no longer holds gets a ``reset``.
An id without its instant (``<seq>``) stands for the instant its change was committed.

The module runs a little over 500 lines: the hub's passes over the feed, its resumes and its
changes by time all read and move the same per-tenant state (the rooms' frames and the feed
position they include) under one rule, that a client is never sent a position older than one it
has; split up, that state would be shared between modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from bookingcache.clock import Clock
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import NotFound
from bookingcache.read.model import ReadModel, RoomEntry, TenantView
from bookingcache.read.roomstate import RoomFrame, encode, end_of_day, frame_of, room_state
from bookingcache.read.streammetrics import StreamMetrics
from bookingcache.read.subscriber import (
    RESET_EXPIRED,
    RESET_ROOMS,
    Delivery,
    StreamFilter,
    Subscriber,
)
from bookingcache.store.port import ChangedCalendar, Store

log = logging.getLogger(__name__)

_FEED_PAGE = 1000
# Stale calendars are asked again this often whether a sync made them fresh (a sync that
# brings a calendar back writes a feed row, which the pass reads at once; this catches a
# calendar whose staleness this process judged on a clock ahead of the writer's).
_STALE_RECHECK = dt.timedelta(seconds=5)
_FAILED_PASS_PAUSE_S = 1.0
# Passes start at least this far apart: the commits of a burst are read, re-read and handed out
# together (one feed read and one calendar read for many), at the cost of this much latency.
_PASS_GAP_S = 0.02
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)


@dataclass(slots=True)
class _TenantStream:
    tenant: Tenant
    frames: dict[str, RoomFrame] = field(default_factory=dict)
    by_mailbox: dict[str, list[str]] = field(default_factory=dict)
    subscribers: set[Subscriber] = field(default_factory=set)
    # The subscribers by the floor they follow, (building, floor); under None those that follow
    # something else (``_place``).
    by_place: dict[tuple[str, str] | None, set[Subscriber]] = field(default_factory=dict)
    position: int = 0
    rooms_ref: object = None
    next_due: dt.datetime | None = None
    stale: set[str] = field(default_factory=set)  # rooms whose calendar is stale
    stale_checked_at: dt.datetime | None = None
    everything: bool = False  # recompute every room in the next pass
    # The instant the frames hold at: the last pass's (or the priming's) clock reading.
    as_of: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Opening:
    """What a new client is sent before the live events: a snapshot (or a reset) of its
    rooms at a feed position, or the rooms it missed since its last id."""

    kind: str  # "snapshot", "reset" or "resume"
    position: int
    frames: list[RoomFrame]
    # The instant (Unix ms) the frames hold at.
    at_ms: int
    reason: str | None = None
    # For "resume": the rooms it missed, oldest change first, each with its feed position
    # (None: it belongs to an earlier position than the client's, or time passed).
    missed: list[Delivery] = field(default_factory=list)


class StreamHub:
    def __init__(
        self,
        model: ReadModel,
        store: Store,
        clock: Clock,
        *,
        metrics: StreamMetrics,
        queue_bound: int = 256,
        poll_interval: dt.timedelta = dt.timedelta(milliseconds=100),
    ) -> None:
        self._model = model
        self._store = store
        self._clock = clock
        self.metrics = metrics
        self.queue_bound = queue_bound
        self._poll_s = poll_interval.total_seconds()
        self._tenants: dict[str, _TenantStream] = {}
        self._position: int | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dirty_rooms: set[str] = set()

    # --- lifecycle and signals -----------------------------------------------------------------

    def attach(self) -> None:
        self._store.add_change_listener(self._on_change)
        self._store.add_rooms_listener(self._on_rooms)
        self._store.watch_feed(self.wake, on_connect=self.wake)

    async def detach(self) -> None:
        self._store.remove_change_listener(self._on_change)
        self._store.remove_rooms_listener(self._on_rooms)
        self._store.unwatch_feed(self.wake)
        for stream in self._tenants.values():
            for subscriber in stream.subscribers:
                subscriber.end()
        self._tenants.clear()
        self.metrics.clients.set(0)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        self._wake.set()

    def _on_change(self, change: ChangedCalendar) -> None:
        if change.tenant_id in self._tenants:
            self._wake.set()

    def _on_rooms(self, tenant_id: str) -> None:
        if tenant_id in self._tenants:
            self._dirty_rooms.add(tenant_id)
            self._wake.set()

    def now(self) -> dt.datetime:
        return self._clock.now()

    @property
    def subscriber_count(self) -> int:
        return sum(len(stream.subscribers) for stream in self._tenants.values())

    # --- clients -------------------------------------------------------------------------------

    async def open(
        self,
        tenant: Tenant,
        stream_filter: StreamFilter,
        *,
        last_event_id: tuple[int, int | None] | None,
    ) -> tuple[Subscriber, Opening]:
        """Register a client and say what it is sent first; ``last_event_id`` is the last id
        it saw, as (position, Unix ms or None). The caller must ``close`` it."""
        subscriber = Subscriber(tenant.id, stream_filter, bound=self.queue_bound)
        async with self._lock:
            stream = self._tenants.get(tenant.id)
            if stream is None:
                stream = _TenantStream(tenant=tenant)
                await self._prime(stream)
                self._tenants[tenant.id] = stream
            # No await from here to the end of the block: the frames taken and the position
            # are those the live events follow on from.
            stream.subscribers.add(subscriber)
            stream.by_place.setdefault(_place(stream_filter), set()).add(subscriber)
            self.metrics.clients.inc()
            position = stream.position
            at_ms = _ms(stream.as_of)
            frames = self._matching(stream, stream_filter)
            self._ensure_running()
        if last_event_id is None:
            return subscriber, Opening("snapshot", position, frames, at_ms)
        try:
            opening = await self._resume(stream, last_event_id, position, at_ms, frames)
        except BaseException:
            self.close(subscriber)
            raise
        if opening.kind == "resume":
            # The missed rooms' ids count on from the client's.
            position_seen, seen_ms = last_event_id
            subscriber.last_id = position_seen
            subscriber.last_at_ms = -1 if seen_ms is None else min(seen_ms, at_ms)
        return subscriber, opening

    def close(self, subscriber: Subscriber) -> None:
        """Forget a client (it disconnected, or its stream ended); idempotent."""
        stream = self._tenants.get(subscriber.tenant_id)
        subscriber.end()
        if stream is None or subscriber not in stream.subscribers:
            return
        stream.subscribers.discard(subscriber)
        place = stream.by_place.get(_place(subscriber.filter))
        if place is not None:
            place.discard(subscriber)
        self.metrics.clients.dec()
        if not stream.subscribers:
            del self._tenants[subscriber.tenant_id]

    def current(self, subscriber: Subscriber) -> Opening:
        """A reset for the client: its rooms' current states at the tenant's position. Called
        by its sender, without yielding before the reset is written to the queue's place."""
        stream = self._tenants.get(subscriber.tenant_id)
        reason = subscriber.reset_reason or RESET_ROOMS
        subscriber.reset_reason = None
        subscriber.queue.clear()
        if stream is None:
            return Opening("reset", subscriber.last_id, [], subscriber.last_at_ms, reason=reason)
        return Opening(
            "reset",
            stream.position,
            self._matching(stream, subscriber.filter),
            _ms(stream.as_of),
            reason=reason,
        )

    @staticmethod
    def _matching(stream: _TenantStream, stream_filter: StreamFilter) -> list[RoomFrame]:
        return [
            frame
            for room_id, frame in sorted(stream.frames.items())
            if stream_filter.matches(room_id, frame.building, frame.floor)
        ]

    async def _resume(
        self,
        stream: _TenantStream,
        last: tuple[int, int | None],
        position: int,
        at_ms: int,
        frames: list[RoomFrame],
    ) -> Opening:
        last_id, last_ms = last
        found = await self._store.changes_since(last_id - 1, limit=1)
        first = found[0] if found else None
        if first is None or first.seq != last_id:
            # Not a position the feed still holds (pruned, or never handed out).
            return Opening("reset", position, frames, at_ms, reason=RESET_EXPIRED)
        # The instant the client's rooms held at: its id's (never later than the frames'), or
        # for an id without one the commit of its change.
        since = first.at if last_ms is None else _instant(min(last_ms, at_ms))
        if await self._store.layout_changed_at(stream.tenant.id) > since:
            # Rooms linked, unlinked or moved, or the tenant's settings changed, while the
            # client was away: its rooms are no longer the ones it holds.
            return Opening("reset", position, frames, at_ms, reason=RESET_ROOMS)
        by_room = {frame.room_id: frame for frame in frames}
        room_seq: dict[str, int] = {}
        cursor = last_id
        while cursor < position:
            page = await self._store.changes_since(cursor, limit=_FEED_PAGE)
            for change in page:
                if change.seq > position:
                    break
                if change.tenant_id == stream.tenant.id:
                    for room_id in stream.by_mailbox.get(change.mailbox, ()):
                        if room_id in by_room:
                            room_seq[room_id] = change.seq
            if len(page) < _FEED_PAGE:
                break
            cursor = page[-1].seq
        timed = await self._changed_by_time(stream, by_room, since=since)
        missed = [
            Delivery(None, by_room[room_id], at_ms) for room_id in sorted(timed - room_seq.keys())
        ]
        ordered = sorted(room_seq.items(), key=lambda item: (item[1], item[0]))
        missed.extend(Delivery(seq, by_room[room_id], at_ms) for room_id, seq in ordered)
        return Opening("resume", position, frames, at_ms, missed=missed)

    async def _changed_by_time(
        self, stream: _TenantStream, by_room: dict[str, RoomFrame], *, since: dt.datetime
    ) -> set[str]:
        """Rooms whose displayed state at ``since`` differs from now with the same events."""
        view = await self._model.view(stream.tenant)
        changed: set[str] = set()
        for room_id, frame in by_room.items():
            entry = view.rooms.get(room_id)
            if entry is None:
                continue
            calendar = view.calendar(entry.mailbox)
            events = calendar.overlapping(since, max(view.horizon.end, end_of_day(since, entry.tz)))
            then, _ = room_state(
                entry,
                events,
                tenant=stream.tenant,
                now=since,
                last_success_at=calendar.last_success_at,
            )
            if encode(then) != frame.data:
                changed.add(room_id)
        return changed

    # --- the pass ------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="change stream hub")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time() - _PASS_GAP_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            gap = last + _PASS_GAP_S - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            self._wake.clear()
            if not self._tenants:
                continue
            last = loop.time()
            try:
                async with self._lock:
                    await self.run_pass()
            except Exception:  # the loop's boundary: log, pause, try again
                log.exception("the change stream's pass failed")
                await asyncio.sleep(_FAILED_PASS_PAUSE_S)

    async def run_pass(self) -> None:
        """Read what the feed holds since the last pass, follow time, and hand out what
        changed. Runs under the hub's lock."""
        changed = await self._read_feed()
        now = _whole_ms(self._clock.now())
        for tenant_id in list(self._tenants):
            stream = self._tenants.get(tenant_id)
            if stream is None:
                continue
            try:
                await self._pass_tenant(stream, changed.get(tenant_id, {}), now)
            except NotFound:
                self._end_tenant(tenant_id)
            except Exception:  # one tenant's failure: its rooms are all recomputed next pass
                log.exception("the change stream's pass of tenant %s failed", tenant_id)
                stream.everything = True
        assert self._position is not None
        for stream in self._tenants.values():
            stream.position = max(stream.position, self._position)

    async def _read_feed(self) -> dict[str, dict[str, int]]:
        """The feed rows since the last pass, by tenant followed and mailbox: the newest seq."""
        if self._position is None:
            self._position = await self._store.last_change_seq()
            return {}
        found: dict[str, dict[str, int]] = {}
        # The position moves only once every page is read: a read that fails part-way (the
        # database going away) leaves it where it was, so the next pass reads those rows again
        # instead of skipping changes whose rooms were never recomputed.
        position = self._position
        while True:
            page = await self._store.changes_since(position, limit=_FEED_PAGE)
            for change in page:
                position = max(position, change.seq)
                if change.tenant_id not in self._tenants:
                    continue
                self._model.calendar_changed(change.tenant_id, change.mailbox)
                found.setdefault(change.tenant_id, {})[change.mailbox] = change.seq
            if len(page) < _FEED_PAGE:
                self._position = position
                return found

    async def _prime(self, stream: _TenantStream) -> None:
        # The position first, then the data: the view holds every row up to it (the read
        # model reads the feed before answering), and later rows are the next pass's.
        position = await self._store.last_change_seq()
        if self._position is None or not self._tenants:
            self._position = position  # nobody listened: what went before is no one's news
        stream.tenant = await self._model.access.tenant(stream.tenant.id)
        self._model.feed_due()
        view = await self._model.view(stream.tenant)
        now = _whole_ms(self._clock.now())
        stream.frames = {}
        self._index(stream, view)
        for entry in view.rooms.values():
            stream.frames[entry.room_id] = await self._frame(stream, view, entry, now)
        stream.position = position
        stream.as_of = now
        stream.stale_checked_at = now
        stream.next_due = _earliest(stream.frames.values())
        stream.stale = {room_id for room_id, frame in stream.frames.items() if frame.stale}

    def _index(self, stream: _TenantStream, view: TenantView) -> None:
        by_mailbox: dict[str, list[str]] = {}
        for entry in view.rooms.values():
            by_mailbox.setdefault(entry.mailbox, []).append(entry.room_id)
        stream.by_mailbox = by_mailbox
        stream.rooms_ref = view.rooms

    async def _frame(
        self, stream: _TenantStream, view: TenantView, entry: RoomEntry, now: dt.datetime
    ) -> RoomFrame:
        """The room's state from the cached events from now to the end of the horizon (the
        next meeting may be days ahead), or to the end of its day when now is past it."""
        calendar = view.calendar(entry.mailbox)
        until = max(view.horizon.end, end_of_day(now, entry.tz))
        if view.covers(now, until):
            events = calendar.overlapping(now, until)
        else:
            events = await self._model.events(view, entry.mailbox, start=now, end=until)
        return frame_of(
            entry, events, tenant=stream.tenant, now=now, last_success_at=calendar.last_success_at
        )

    async def _pass_tenant(
        self, stream: _TenantStream, changes: dict[str, int], now: dt.datetime
    ) -> None:
        tenant = await self._model.access.tenant(stream.tenant.id)
        if tenant.created_at != stream.tenant.created_at:
            raise NotFound(f"tenant {tenant.id!r} was deleted")
        everything = stream.everything or tenant != stream.tenant
        stream.tenant = tenant
        rooms_dirty = tenant.id in self._dirty_rooms
        self._dirty_rooms.discard(tenant.id)
        due = stream.next_due is not None and stream.next_due <= now
        recheck = bool(stream.stale) and (
            stream.stale_checked_at is None or not now < stream.stale_checked_at + _STALE_RECHECK
        )
        if not (changes or everything or rooms_dirty or due or recheck):
            # No frame changes before its due time, and none is due: they all hold now.
            stream.as_of = now
            return
        stream.everything = True  # until this pass completes
        view = await self._model.view(tenant)
        if recheck or due:
            stream.stale_checked_at = now
            bound = dt.timedelta(seconds=tenant.staleness_bound_s)
            mailboxes = [entry.mailbox for entry in view.rooms.values()]
            await self._model.confirm_sync_state(view, mailboxes, now=now, bound=bound)
            view = await self._model.view(tenant)
        # Which rooms to compute, and the feed position each change belongs to.
        seqs: dict[str, int | None] = {}
        reindexed = view.rooms is not stream.rooms_ref
        if reindexed:
            self._index(stream, view)
        if everything or reindexed:
            targets: Iterable[RoomEntry] = view.rooms.values()
        else:
            wanted: dict[str, RoomEntry] = {}
            for mailbox in changes:
                for room_id in stream.by_mailbox.get(mailbox, ()):
                    wanted[room_id] = view.rooms[room_id]
            for room_id, frame in stream.frames.items() if due or recheck else ():
                if (frame.due is not None and frame.due <= now) or (recheck and frame.stale):
                    entry = view.rooms.get(room_id)
                    if entry is not None:
                        wanted[room_id] = entry
            targets = wanted.values()
        for mailbox, seq in changes.items():
            for room_id in stream.by_mailbox.get(mailbox, ()):
                seqs[room_id] = seq
        computed = [await self._frame(stream, view, entry, now) for entry in targets]
        # From here on nothing yields: frames, queues and the position move together.
        stream.as_of = now
        at_ms = _ms(now)
        deliveries: list[Delivery] = []
        for frame in computed:
            previous = stream.frames.get(frame.room_id)
            stream.frames[frame.room_id] = frame
            if frame.stale:
                stream.stale.add(frame.room_id)
            else:
                stream.stale.discard(frame.room_id)
            if previous is None or previous.data != frame.data:
                deliveries.append(Delivery(seqs.get(frame.room_id), frame, at_ms))
        if everything or reindexed or due:
            gone = [room_id for room_id in stream.frames if room_id not in view.rooms]
            for room_id in gone:
                frame = stream.frames.pop(room_id)
                stream.stale.discard(room_id)
                for subscriber in stream.subscribers:
                    if subscriber.filter.matches(room_id, frame.building, frame.floor):
                        subscriber.reset(RESET_ROOMS)
            stream.next_due = _earliest(stream.frames.values())
        else:  # only these rooms' times moved; one moved later makes a pass that finds none
            dues = [frame.due for frame in computed if frame.due is not None]
            if stream.next_due is not None:
                dues.append(stream.next_due)
            stream.next_due = min(dues) if dues else None
        stream.everything = False
        if deliveries:
            deliveries.sort(key=lambda item: (item.seq or 0, item.frame.room_id))
            _hand_out(stream, deliveries)

    def _end_tenant(self, tenant_id: str) -> None:
        stream = self._tenants.pop(tenant_id, None)
        if stream is None:
            return
        for subscriber in stream.subscribers:
            subscriber.end()
            self.metrics.clients.dec()


def _whole_ms(instant: dt.datetime) -> dt.datetime:
    """``instant`` to the millisecond below, so that an event id states it exactly."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def _ms(instant: dt.datetime | None) -> int:
    """An instant as Unix milliseconds (-1: none)."""
    if instant is None:
        return -1
    return (instant - _EPOCH) // _MILLISECOND


def _instant(ms: int) -> dt.datetime:
    return _EPOCH + ms * _MILLISECOND


def _earliest(frames: Iterable[RoomFrame]) -> dt.datetime | None:
    dues = [frame.due for frame in frames if frame.due is not None]
    return min(dues) if dues else None


def _place(stream_filter: StreamFilter) -> tuple[str, str] | None:
    """Where a subscriber is filed in ``by_place``: the floor it follows; None for the others
    (a building, room ids, everything), whose deliveries are filtered one by one."""
    if stream_filter.rooms or stream_filter.building is None or stream_filter.floor is None:
        return None
    return stream_filter.building, stream_filter.floor


def _hand_out(stream: _TenantStream, deliveries: list[Delivery]) -> None:
    """Offer each subscriber the deliveries it follows: those of a floor by a lookup per floor
    that changed (the usual map client), the others filtered one by one."""
    floors: dict[tuple[str, str] | None, list[Delivery]] = {}
    for item in deliveries:
        building, floor = item.frame.building, item.frame.floor
        if building is not None and floor is not None:
            floors.setdefault((building, floor), []).append(item)
    by_place = stream.by_place
    for place, items in floors.items():
        for subscriber in by_place.get(place, ()):
            subscriber.offer_followed(items)
    for subscriber in by_place.get(None, ()):
        subscriber.offer(deliveries)
