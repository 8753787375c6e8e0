"""The availability read model: per tenant, the room index and every linked calendar's cached
events around now, kept in memory so availability answers never wait for the database.

Consistency (docs/architecture.md, "change feed -> availability read model"):

* Events: the store calls its change listeners right after a commit that changed a calendar's
  events; this process marks the calendar dirty and re-reads it before the next answer. Other
  processes' writes arrive through the change feed (``Store.changes_since``), polled at most
  every ``poll_interval`` when an answer is about to be given.
* Sync state: a refresh that changed nothing still moves ``last_success_at`` without a feed
  row. A calendar that looks stale from memory is therefore re-checked in the store (at most
  every ``poll_interval``) before it is reported stale; fresh-looking data can only be fresher.
* Room links: re-read per tenant when the store signals a room write in this process (its
  ``add_rooms_listener``), when a change names a mailbox the index does not
  know or a calendar disappears, when a request names an unknown room, and otherwise every
  ``rooms_ttl`` (writes by other processes).

Requests outside the cached horizon (yesterday .. +15 days around the load) read the store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from bookingcache.clock import Clock
from bookingcache.domain.availability import is_stale
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.intervals import Interval
from bookingcache.domain.tenancy import CalendarState, Tenant
from bookingcache.domain.timezones import resolve_time_zone
from bookingcache.errors import InvalidInput
from bookingcache.read.access import AccessCache
from bookingcache.read.views import PLACEMENT_SLACK, CachedCalendar, RoomEntry, TenantView
from bookingcache.store.port import ChangedCalendar, Store

__all__ = ["CachedCalendar", "ReadModel", "RoomEntry", "TenantView"]

log = logging.getLogger(__name__)

UTC = dt.UTC
# The store makes change-feed sequence numbers visible in commit order (on PostgreSQL they are
# settled inside COMMIT, ``store.sql.windows.append_changes``); polls still look back this far
# and skip numbers already seen, a margin that costs one short read.
_FEED_LOOKBACK = 256
_FEED_PAGE = 1000
# Up to this many calendars' states are read by name (one query); more, and their tenant's
# whole list is read.
_BY_NAME = 256
_ROOMS = ""  # marks "room links changed" among the mailboxes changed while re-centring


def _due(last: dt.datetime | None, now: dt.datetime, interval: dt.timedelta) -> bool:
    """True unless ``last`` lies within ``interval`` before ``now`` (a clock set back is due)."""
    return last is None or not last <= now < last + interval


def _zone(name: str | None, fallback: str) -> tuple[str, ZoneInfo]:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return candidate, resolve_time_zone(candidate)
        except InvalidInput:
            log.warning("ignoring unusable time zone %r", candidate)
    return "UTC", ZoneInfo("UTC")


class ReadModel:
    """In-memory availability data for every tenant asked about since start."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        horizon_past: dt.timedelta = dt.timedelta(days=1),
        horizon_future: dt.timedelta = dt.timedelta(days=15),
        reload_after: dt.timedelta = dt.timedelta(hours=12),
        poll_interval: dt.timedelta = dt.timedelta(seconds=1),
        token_refresh: dt.timedelta = dt.timedelta(seconds=5),
        rooms_ttl: dt.timedelta = dt.timedelta(seconds=30),
        load_batch: int = 100,
    ) -> None:
        self._store = store
        self._clock = clock
        self._horizon_past = horizon_past
        self._horizon_future = horizon_future
        self._reload_after = reload_after
        self._poll_interval = poll_interval
        self._rooms_ttl = rooms_ttl
        self._load_batch = max(1, load_batch)
        self._views: dict[str, TenantView] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: dict[str, set[str]] = {}
        self._rooms_dirty: set[str] = set()
        self._feed_seq: int | None = None
        self._feed_seen: set[int] = set()
        self._last_poll: dt.datetime | None = None
        self._poll_lock = asyncio.Lock()
        self.access = AccessCache(store, clock, ttl=poll_interval, token_refresh=token_refresh)
        self._zones: dict[tuple[str | None, str], tuple[str, ZoneInfo]] = {}
        self._background: dict[str, asyncio.Task[None]] = {}
        # Per tenant whose horizon is being rebuilt: what changed meanwhile (mailboxes, _ROOMS).
        self._recentring: dict[str, set[str]] = {}

    # --- change signals ----------------------------------------------------------------------

    def attach(self) -> None:
        """Subscribe to the store's signals: this process's commits at once, and (PostgreSQL)
        other processes' refreshes, which make the next answer read the feed at once."""
        self._store.add_change_listener(self._on_change)
        self._store.add_rooms_listener(self.rooms_changed)
        self._store.add_tenants_listener(self.access.forget)
        self._store.watch_feed(self.feed_due, on_connect=self.feed_due)

    async def detach(self) -> None:
        """Stop following the store, and end the re-reads running in the background."""
        self._store.remove_change_listener(self._on_change)
        self._store.remove_rooms_listener(self.rooms_changed)
        self._store.remove_tenants_listener(self.access.forget)
        self._store.unwatch_feed(self.feed_due)
        tasks = list(self._background.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.access.flush()
        except Exception:  # stopping goes on: only a last-used instant is lost
            log.exception("could not record when read tokens were last used")

    def feed_due(self) -> None:
        """Read the change feed before the next answer, whenever the last read was."""
        self._last_poll = None

    def _on_change(self, change: ChangedCalendar) -> None:
        self.calendar_changed(change.tenant_id, change.mailbox)

    def calendar_changed(self, tenant_id: str, mailbox: str) -> None:
        """The calendar's cached events changed; re-read it before next use."""
        building = self._recentring.get(tenant_id)
        if building is not None:
            building.add(mailbox)
        view = self._views.get(tenant_id)
        if view is None:
            return
        self._dirty.setdefault(tenant_id, set()).add(mailbox)
        if mailbox not in view.calendars:
            # A mailbox the index has not seen: a room was linked to it.
            self._rooms_dirty.add(tenant_id)

    def rooms_changed(self, tenant_id: str) -> None:
        """The tenant's room links changed (or the tenant went); re-read before next use."""
        self._rooms_dirty.add(tenant_id)
        building = self._recentring.get(tenant_id)
        if building is not None:
            building.add(_ROOMS)
        self.access.forget(tenant_id)

    # --- reading -----------------------------------------------------------------------------

    async def view(self, tenant: Tenant) -> TenantView:
        """The tenant's up-to-date view: loaded on first use, then kept current."""
        await self._poll_feed()
        lock = self._locks.setdefault(tenant.id, asyncio.Lock())
        async with lock:
            current = self._views.get(tenant.id)
            now = self._clock.now()
            if (
                current is None
                or current.created_at != tenant.created_at
                or now < current.loaded_at  # a clock set back: start afresh
            ):
                current = await self._load(tenant, now)
            else:
                if now >= current.loaded_at + self._reload_after:
                    # Re-centre the horizon on now: built aside, swapped in when complete.
                    self._in_background(f"{tenant.id} horizon", self._recentre(tenant, current))
                if current.default_time_zone != tenant.default_time_zone:
                    current.default_time_zone = tenant.default_time_zone
                    self._rooms_dirty.add(tenant.id)
                if _due(current.rooms_read_at, now, self._rooms_ttl):
                    # Other processes' room writes: re-read without holding anyone up.
                    current.rooms_read_at = now
                    self._in_background(f"{tenant.id} rooms", self._refresh_rooms_quietly(current))
            # Signals that arrived while loading are honoured now, before anyone reads.
            if tenant.id in self._rooms_dirty:
                await self._reload_rooms(current)
            dirty = self._dirty.pop(tenant.id, None)
            if dirty:
                try:
                    await self._reload_calendars(current, sorted(dirty))
                except BaseException:
                    # Not read (the database away): they stay dirty for the next reader, or
                    # their changes would never reach this process's answers and streams.
                    self._dirty.setdefault(tenant.id, set()).update(dirty)
                    raise
            return current

    async def room(self, view: TenantView, room_id: str) -> RoomEntry:
        """The room's entry; ``NotFound`` when not linked (after ``recheck_unknown``)."""
        await self.recheck_unknown(view, [room_id])
        return view.room(room_id)

    async def recheck_unknown(self, view: TenantView, names: Iterable[str]) -> None:
        """Re-read the room index when a request names rooms (or mailboxes) it does not know:
        they may have been linked by another process. At most once per poll interval."""
        now = self._clock.now()
        unknown = any(name not in view.rooms and not view.rooms_of_mailbox(name) for name in names)
        if unknown and _due(view.rooms_read_at, now, self._poll_interval):
            async with self._locks.setdefault(view.tenant_id, asyncio.Lock()):
                await self._reload_rooms(view)

    async def events(
        self, view: TenantView, mailbox: str, *, start: dt.datetime, end: dt.datetime
    ) -> list[BasicEvent]:
        """The mailbox's events that may overlap [start, end): from memory inside the horizon,
        otherwise from the store."""
        if view.covers(start, end):
            return view.calendar(mailbox).overlapping(start, end)
        found = await self._store.events_in_window(
            view.tenant_id,
            [mailbox],
            start=start - PLACEMENT_SLACK,
            end=end + PLACEMENT_SLACK,
        )
        return found.get(mailbox, [])

    async def events_of(
        self, view: TenantView, mailboxes: Sequence[str], *, start: dt.datetime, end: dt.datetime
    ) -> dict[str, list[BasicEvent]]:
        """``events`` for many mailboxes: from memory inside the horizon, otherwise one store
        read per batch of mailboxes."""
        if view.covers(start, end):
            return {m: view.calendar(m).overlapping(start, end) for m in mailboxes}
        found: dict[str, list[BasicEvent]] = {}
        for offset in range(0, len(mailboxes), self._load_batch):
            found.update(
                await self._store.events_in_window(
                    view.tenant_id,
                    list(mailboxes[offset : offset + self._load_batch]),
                    start=start - PLACEMENT_SLACK,
                    end=end + PLACEMENT_SLACK,
                )
            )
        return {mailbox: found.get(mailbox, []) for mailbox in mailboxes}

    async def confirm_sync_state(
        self, view: TenantView, mailboxes: Iterable[str], *, now: dt.datetime, bound: dt.timedelta
    ) -> None:
        """Re-read the sync state of calendars that look stale from memory (a refresh that
        changed no event moves ``last_success_at`` without a change signal)."""
        doubtful: list[CachedCalendar] = []
        fresh_since = now - bound  # a cheap pre-filter; ``is_stale`` decides
        for mailbox in mailboxes:
            calendar = view.calendar(mailbox)
            synced = calendar.last_success_at
            looks_stale = synced is None or synced < fresh_since
            if (
                looks_stale
                and is_stale(synced, now=now, bound=bound)
                and _due(calendar.sync_checked_at, now, self._poll_interval)
            ):
                doubtful.append(calendar)
        if not doubtful:
            return
        states = await self._states(view, [calendar.mailbox for calendar in doubtful])
        for calendar in doubtful:
            calendar.sync_checked_at = now
            state = states.get(calendar.mailbox)
            if state is None:
                self._rooms_dirty.add(view.tenant_id)  # unlinked meanwhile
            elif calendar.last_success_at != state.last_success_at:
                calendar.last_success_at = state.last_success_at
                view.changed()

    # --- loading -----------------------------------------------------------------------------

    async def _load(self, tenant: Tenant, now: dt.datetime) -> TenantView:
        if self._feed_seq is None:
            # Read the feed position before the data: a row committed after this read is
            # replayed by the next poll, never lost; the rows read now are already in the data.
            self._feed_seq = await self._store.last_change_seq()
            await self._read_feed()
            self._last_poll = self._clock.now()
        self._dirty.pop(tenant.id, None)
        view = TenantView(
            tenant_id=tenant.id,
            created_at=tenant.created_at,
            default_time_zone=tenant.default_time_zone,
            horizon=Interval(now - self._horizon_past, now + self._horizon_future),
            loaded_at=now,
        )
        # Registered before reading, so that changes committed meanwhile are marked dirty.
        self._views[tenant.id] = view
        await self._reload_rooms(view)
        return view

    async def _reload_rooms(self, view: TenantView, *, consume: bool = True) -> None:
        """Re-read the room index and every calendar's sync state; read the events of newly
        linked calendars, forget unlinked ones. Everything is read first and applied without
        yielding, so answers given meanwhile see the old index or the new one, never a mix."""
        if consume:
            self._rooms_dirty.discard(view.tenant_id)
        view.rooms_read_at = self._clock.now()
        try:
            rooms = await self._store.list_rooms(view.tenant_id)
            listed = await self._store.list_calendars(view.tenant_id)
        except BaseException:
            if consume:  # not read: still to do
                self._rooms_dirty.add(view.tenant_id)
            raise
        states = {state.mailbox: state for state in listed}
        entries: dict[str, RoomEntry] = {}
        for room in rooms:
            state = states.get(room.mailbox)
            name = room.time_zone or (state.time_zone if state else None)
            time_zone, tz = self._zone(name, view.default_time_zone)
            entry = RoomEntry(room=room, time_zone=time_zone, tz=tz)
            # An unchanged room keeps its entry, and with it the answers kept for it.
            previous = view.rooms.get(room.room_id)
            entries[room.room_id] = previous if previous == entry else entry
        linked = {entry.mailbox for entry in entries.values()}
        try:
            loaded = await self._read_calendars(
                view, sorted(linked - view.calendars.keys()), states
            )
        except BaseException:
            if consume:
                self._rooms_dirty.add(view.tenant_id)
            raise
        changed = bool(loaded) or entries.keys() != view.rooms.keys()
        changed = changed or any(entry is not view.rooms[key] for key, entry in entries.items())
        view.rooms = entries
        for mailbox in list(view.calendars):
            if mailbox not in linked:
                del view.calendars[mailbox]
                changed = True
            elif mailbox in states:
                calendar = view.calendars[mailbox]
                if calendar.last_success_at != states[mailbox].last_success_at:
                    calendar.last_success_at = states[mailbox].last_success_at
                    changed = True
        for mailbox, calendar in loaded.items():
            view.calendars.setdefault(mailbox, calendar)
        if changed:
            view.selections.clear()
            view.changed()

    def _in_background(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` unless a job of that name is already running."""
        if name in self._background:
            job.close()
            return
        task = asyncio.create_task(job)
        self._background[name] = task
        task.add_done_callback(lambda _: self._background.pop(name, None))

    async def _recentre(self, tenant: Tenant, current: TenantView) -> None:
        """Build a view around now beside the current one and swap it in; what changed while
        building is re-read by the next request."""
        changed: set[str] = set()
        self._recentring[tenant.id] = changed
        try:
            now = self._clock.now()
            fresh = TenantView(
                tenant_id=tenant.id,
                created_at=tenant.created_at,
                default_time_zone=tenant.default_time_zone,
                horizon=Interval(now - self._horizon_past, now + self._horizon_future),
                loaded_at=now,
            )
            await self._reload_rooms(fresh, consume=False)
            if self._views.get(tenant.id) is current:
                self._views[tenant.id] = fresh
                if _ROOMS in changed:
                    self._rooms_dirty.add(tenant.id)
                mailboxes = changed - {_ROOMS}
                if mailboxes:
                    self._dirty.setdefault(tenant.id, set()).update(mailboxes)
        except Exception:  # a background job's boundary: the next request tries again
            log.exception("re-centring the horizon of tenant %s failed", tenant.id)
        finally:
            self._recentring.pop(tenant.id, None)

    async def _refresh_rooms_quietly(self, view: TenantView) -> None:
        try:
            await self._reload_rooms(view)
        except Exception:  # a background job's boundary: the next request tries again
            log.exception("re-reading the rooms of tenant %s failed", view.tenant_id)
            view.rooms_read_at = None

    async def settle(self) -> None:
        """Wait for background re-reads in flight (tests and orderly shutdown)."""
        while self._background:
            await asyncio.gather(*self._background.values(), return_exceptions=True)

    def _zone(self, name: str | None, fallback: str) -> tuple[str, ZoneInfo]:
        key = (name, fallback)
        found = self._zones.get(key)
        if found is None:
            found = self._zones[key] = _zone(name, fallback)
        return found

    async def _read_calendars(
        self, view: TenantView, mailboxes: Sequence[str], states: dict[str, CalendarState]
    ) -> dict[str, CachedCalendar]:
        """The calendars' events in the view's horizon, one store read per batch."""
        loaded: dict[str, CachedCalendar] = {}
        for offset in range(0, len(mailboxes), self._load_batch):
            batch = list(mailboxes[offset : offset + self._load_batch])
            found = await self._store.events_in_window(
                view.tenant_id,
                batch,
                start=view.horizon.start - PLACEMENT_SLACK,
                end=view.horizon.end + PLACEMENT_SLACK,
            )
            for mailbox in batch:
                state = states.get(mailbox)
                loaded[mailbox] = CachedCalendar.of(
                    mailbox, found.get(mailbox, ()), state.last_success_at if state else None
                )
        return loaded

    async def _reload_calendars(self, view: TenantView, mailboxes: list[str]) -> None:
        zones = {entry.mailbox: entry.time_zone for entry in view.rooms.values()}
        wanted = [mailbox for mailbox in mailboxes if mailbox in zones]
        if not wanted:
            return
        states = await self._states(view, wanted)
        if any(
            mailbox not in states or states[mailbox].time_zone != zones[mailbox]
            for mailbox in wanted
        ):
            # A calendar went away (its room unlinked or re-linked, or the tenant deleted) or
            # moved to another zone: the room index changed too.
            await self._reload_rooms(view)
            wanted = [mailbox for mailbox in wanted if mailbox in view.calendars]
        view.calendars.update(await self._read_calendars(view, wanted, states))
        view.changed()

    async def _states(self, view: TenantView, mailboxes: list[str]) -> dict[str, CalendarState]:
        """The sync states of those calendars that still exist."""
        if len(mailboxes) > _BY_NAME:
            listed = await self._store.list_calendars(view.tenant_id)
        else:
            listed = await self._store.list_calendars(view.tenant_id, mailboxes=mailboxes)
        return {state.mailbox: state for state in listed}

    async def _poll_feed(self) -> None:
        if self._feed_seq is None or not self._views:
            return
        if not _due(self._last_poll, self._clock.now(), self._poll_interval):
            return
        async with self._poll_lock:
            now = self._clock.now()
            if not _due(self._last_poll, now, self._poll_interval):
                return
            self._last_poll = now
            await self._read_feed()

    async def _read_feed(self) -> None:
        """Mark the calendars of unseen feed rows dirty (rows already seen are skipped)."""
        assert self._feed_seq is not None
        position = max(0, self._feed_seq - _FEED_LOOKBACK)
        newest = self._feed_seq
        while True:
            changes = await self._store.changes_since(position, limit=_FEED_PAGE)
            for change in changes:
                if change.seq not in self._feed_seen:
                    self._feed_seen.add(change.seq)
                    self.calendar_changed(change.tenant_id, change.mailbox)
                position = max(position, change.seq)
            newest = max(newest, position)
            if len(changes) < _FEED_PAGE:
                break
        self._feed_seq = newest
        floor = newest - _FEED_LOOKBACK
        self._feed_seen = {seq for seq in self._feed_seen if seq > floor}
