"""Cached events: the replace-window diff (the one write every event source funnels through),
the bulk window read availability is built from, and the change feed appends.

The writes run inside a transaction the caller (``SqlStore``) opened, as plain synchronous
SQLAlchemy (``SqlBase.transaction``); the window read runs on a read connection.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, delete, insert, or_, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bookingcache.domain.availability import is_stale
from bookingcache.domain.events import BasicEvent, EventDiff
from bookingcache.domain.timezones import is_valid_time_zone, resolve_time_zone
from bookingcache.errors import InvalidInput, NotFound
from bookingcache.store.jobs import ClaimLost
from bookingcache.store.port import ChangedCalendar
from bookingcache.store.sql import notices
from bookingcache.store.sql.lists import among
from bookingcache.store.sql.rows import (
    EVENT_COLUMNS,
    RAW_EVENT_COLUMNS,
    as_utc,
    event_from_tuple,
    event_values,
    events_from_raw,
    overlap_condition,
    overlaps,
)
from bookingcache.store.sql.schema import (
    EVENT_ID,
    calendar_changes,
    calendars,
    events,
    jobs,
    tenants,
)

T = TypeVar("T")

CHUNK = 500
# All-day events are local dates; placed in any zone they move at most this far from UTC.
_MAX_ZONE_OFFSET = dt.timedelta(hours=14)


def chunked(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def events_by_id(
    events_in: Sequence[BasicEvent], *, window_start: dt.datetime, window_end: dt.datetime
) -> dict[str, BasicEvent]:
    """The given events that belong to the window, keyed by id; ``InvalidInput`` on a
    duplicate id or an id the store cannot hold."""
    by_id: dict[str, BasicEvent] = {}
    for event in events_in:
        if not event.id or len(event.id) > EVENT_ID:
            raise InvalidInput(f"event ids must be 1 to {EVENT_ID} characters")
        if event.series_master_id is not None and len(event.series_master_id) > EVENT_ID:
            raise InvalidInput(f"event {event.id!r}: series master id is too long")
        if event.id in by_id:
            raise InvalidInput(f"event id {event.id!r} appears twice in the window")
        by_id[event.id] = event
    return {
        event_id: event
        for event_id, event in by_id.items()
        if overlaps(event, window_start, window_end)
    }


# The statements of a window's write are built once, with bound parameters: built again for
# every write, their construction and cache keys cost more of the CPU than SQLite's work.
_HELD = select(jobs.c.id).where(
    jobs.c.id == bindparam("job_id"), jobs.c.locked_by == bindparam("lease")
)
_HELD_FOR_UPDATE = _HELD.with_for_update()


def hold_claim(conn: Connection, job_id: int, lease: str) -> None:
    """Inside a refresh's write: the job is still claimed by ``lease``, else ``ClaimLost``. On
    PostgreSQL the job row stays locked to the end of the transaction, so no other worker
    takes the claim over between this check and the commit (a claim skips locked rows)."""
    query = _HELD_FOR_UPDATE if conn.dialect.name == "postgresql" else _HELD
    if conn.execute(query, {"job_id": job_id, "lease": lease}).first() is None:
        raise ClaimLost(f"job {job_id} was claimed again before its refresh wrote")


_THE_CALENDAR = and_(
    calendars.c.tenant_id == bindparam("key_tenant"),
    calendars.c.mailbox == bindparam("key_mailbox"),
)
_BEFORE = calendars.alias("before")
# The calendar's last success before this one, and its tenant's staleness bound.
_PREVIOUS = (
    select(
        _BEFORE.c.tenant_id,
        _BEFORE.c.mailbox,
        _BEFORE.c.last_success_at.label("previous_success"),
        tenants.c.staleness_bound_s.label("bound_s"),
    )
    .join(tenants, tenants.c.id == _BEFORE.c.tenant_id)
    .where(
        _BEFORE.c.tenant_id == bindparam("key_tenant"),
        _BEFORE.c.mailbox == bindparam("key_mailbox"),
    )
)
_PREVIOUS_ROW = _PREVIOUS.subquery("previous")
_RECORD_SUCCESS_UPDATE = (
    update(calendars)
    .where(_THE_CALENDAR)
    .values(
        last_refresh_at=bindparam("synced_at", type_=calendars.c.last_refresh_at.type),
        last_success_at=bindparam("synced_at", type_=calendars.c.last_success_at.type),
        last_error=None,
        consecutive_failures=0,
        window_start=bindparam("new_start", type_=calendars.c.window_start.type),
        window_end=bindparam("new_end", type_=calendars.c.window_end.type),
        delta_link=bindparam("new_link", type_=calendars.c.delta_link.type),
    )
)
_RECORD_SUCCESS = _RECORD_SUCCESS_UPDATE.returning(calendars.c.mailbox)
# On PostgreSQL one statement: the FROM subquery reads the row as it was before the update (the
# statement's snapshot). SQLite's RETURNING cannot name a FROM table: it reads first, in the
# same transaction, which its one writer keeps to itself.
_RECORD_SUCCESS_WITH_PREVIOUS = _RECORD_SUCCESS_UPDATE.where(
    _PREVIOUS_ROW.c.tenant_id == calendars.c.tenant_id,
    _PREVIOUS_ROW.c.mailbox == calendars.c.mailbox,
).returning(calendars.c.mailbox, _PREVIOUS_ROW.c.previous_success, _PREVIOUS_ROW.c.bound_s)


def record_success_and_lock(
    conn: Connection,
    tenant_id: str,
    mailbox: str,
    *,
    window_start: dt.datetime,
    window_end: dt.datetime,
    synced_at: dt.datetime,
    delta_link: str | None = None,
) -> bool:
    """Record a successful sync of the calendar and the source's delta link for the window
    (``None``: none), so link and cached events always commit together; ``NotFound`` if the
    calendar does not exist. Returns whether the calendar was unknown or stale until this
    sync (never synced, or its last success older than the tenant's staleness bound): its
    rooms' displayed state changes even when its events do not.

    This is the first statement of a replacement on purpose: on PostgreSQL the UPDATE holds
    the calendar row's lock until commit, so a second replacement of the same calendar waits
    here and then reads the first one's committed events. On SQLite ``BEGIN IMMEDIATE``
    already holds the database's write lock. The transaction rolls back if anything later
    fails, so the success is only recorded together with the events.
    """
    values = {
        "key_tenant": tenant_id,
        "key_mailbox": mailbox,
        "synced_at": synced_at,
        "new_start": window_start,
        "new_end": window_end,
        "new_link": delta_link,
    }
    if conn.dialect.name == "postgresql":
        row = conn.execute(_RECORD_SUCCESS_WITH_PREVIOUS, values).first()
        previous = None if row is None else (row.previous_success, row.bound_s)
    else:
        before = conn.execute(_PREVIOUS, values).first()
        row = conn.execute(_RECORD_SUCCESS, values).first()
        previous = None if before is None else (before.previous_success, before.bound_s)
    if row is None or previous is None:
        tenant = conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))
        if tenant.first() is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        raise NotFound(f"no room of tenant {tenant_id!r} is linked to mailbox {mailbox!r}")
    success, bound_s = previous
    return is_stale(
        None if success is None else as_utc(success),
        now=synced_at,
        bound=dt.timedelta(seconds=bound_s),
    )


_OF_CALENDAR = and_(
    events.c.tenant_id == bindparam("key_tenant"), events.c.mailbox == bindparam("key_mailbox")
)
_IN_WINDOW = overlap_condition(bindparam("window_start"), bindparam("window_end"))
_WITH_IDS = events.c.event_id.in_(bindparam("ids", expanding=True))
# The cached events in the window now, and those of the given ids wherever they are.
_CACHED = select(*EVENT_COLUMNS, _IN_WINDOW.label("in_window")).where(
    _OF_CALENDAR, or_(_IN_WINDOW, _WITH_IDS)
)
_CACHED_BY_ID = select(*EVENT_COLUMNS).where(_OF_CALENDAR, _WITH_IDS)
_DELETE_BY_ID = delete(events).where(_OF_CALENDAR, _WITH_IDS)
_UPDATE_BY_ID = update(events).where(
    events.c.tenant_id == bindparam("key_tenant"),
    events.c.mailbox == bindparam("key_mailbox"),
    events.c.event_id == bindparam("key_event"),
)


def apply_window(
    conn: Connection,
    tenant_id: str,
    mailbox: str,
    *,
    window_start: dt.datetime,
    window_end: dt.datetime,
    given: dict[str, BasicEvent],
) -> EventDiff:
    """Make the cached events overlapping the window exactly ``given``; return the diff."""
    key = {"key_tenant": tenant_id, "key_mailbox": mailbox}
    # An event that moved into the window is still cached under its id outside it, so the
    # given ids are looked up too (in the same query while they are few).
    ids = list(given)
    first, rest = ids[:CHUNK], ids[CHUNK:]
    result = conn.execute(
        _CACHED, {**key, "window_start": window_start, "window_end": window_end, "ids": first}
    )
    cached: dict[str, BasicEvent] = {}
    in_window: set[str] = set()
    for row in result.all():
        event = event_from_tuple(row[:-1])
        cached[event.id] = event
        if row[-1]:
            in_window.add(event.id)
    for chunk in chunked(rest):
        result = conn.execute(_CACHED_BY_ID, {**key, "ids": list(chunk)})
        cached.update((event.id, event) for event in map(event_from_tuple, result.all()))

    added = [event for event_id, event in given.items() if event_id not in cached]
    changed = [
        event
        for event_id, event in given.items()
        if event_id in cached and cached[event_id] != event
    ]
    removed = sorted(in_window - given.keys())

    for chunk in chunked(removed):
        conn.execute(_DELETE_BY_ID, {**key, "ids": list(chunk)})
    if changed:
        rows: list[dict[str, Any]] = []
        for event in changed:
            values = event_values(event)
            del values["event_id"]
            values.update(key_tenant=tenant_id, key_mailbox=mailbox, key_event=event.id)
            rows.append(values)
        conn.execute(_UPDATE_BY_ID, rows)
    if added:
        conn.execute(
            insert(events),
            [{"tenant_id": tenant_id, "mailbox": mailbox, **event_values(e)} for e in added],
        )
    return EventDiff(added=tuple(added), changed=tuple(changed), removed=tuple(removed))


def append_changes(
    conn: Connection, keys: Iterable[tuple[str, str]], *, at: dt.datetime
) -> list[ChangedCalendar]:
    """Append one change-feed row per (tenant, mailbox); return the calendars, in that order.

    Sequence numbers follow commit order, so a poller that has read up to ``seq`` never later
    finds a smaller one appear. On PostgreSQL the server sees to it at commit: a deferred
    trigger (migration 0012) takes a transaction-scoped advisory lock inside COMMIT and gives
    each new row its final seq, so no lock is held across this process's round trips and the
    seq the INSERT would return is provisional (none is returned: ``changes_since`` reads the
    settled ones). SQLite's single writer gives the same order by itself.
    """
    rows: list[dict[str, Any]] = [
        {"tenant_id": tenant_id, "mailbox": mailbox, "at": at} for tenant_id, mailbox in keys
    ]
    if not rows:
        return []
    for chunk in chunked(rows):
        conn.execute(insert(calendar_changes), list(chunk))
    # Other processes' read models look at the feed when this commits, not at their next poll.
    notices.notify(conn, notices.CHANGES_CHANNEL)
    return [ChangedCalendar(row["tenant_id"], row["mailbox"]) for row in rows]


async def load_window(
    conn: AsyncConnection,
    tenant_id: str,
    mailboxes: Sequence[str],
    *,
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, list[BasicEvent]]:
    """Cached events overlapping [start, end) per mailbox, ordered by start: one query per
    chunk of mailboxes, rows turned into events without ORM objects. All-day events are kept
    when, placed in the calendar's time zone, they overlap the window."""
    wanted = list(dict.fromkeys(mailboxes))
    found: dict[str, list[BasicEvent]] = {mailbox: [] for mailbox in wanted}
    # The outer bounds come first so that an index range does the narrowing; the exact rule
    # for timed events is checked on what is left.
    condition = and_(
        events.c.start_utc < end + _MAX_ZONE_OFFSET,
        events.c.end_utc >= start - _MAX_ZONE_OFFSET,
        or_(events.c.is_all_day == true(), overlap_condition(start, end)),
    )
    with_all_day: set[str] = set()
    text_times = conn.dialect.name == "sqlite"
    for chunk in chunked(wanted, 1000):
        result = await conn.execute(
            select(*RAW_EVENT_COLUMNS)
            .where(
                events.c.tenant_id == tenant_id,
                among(events.c.mailbox, chunk, dialect=conn.dialect.name),
                condition,
            )
            .order_by(events.c.mailbox, events.c.start_utc)
        )
        for mailbox, event in events_from_raw(result.all(), text_times=text_times):
            found[mailbox].append(event)
            if event.is_all_day:
                with_all_day.add(mailbox)
    if with_all_day:
        zones = await _calendar_zones(conn, tenant_id, sorted(with_all_day))
        for mailbox in with_all_day:
            zone = zones.get(mailbox, zoneinfo.ZoneInfo("UTC"))
            found[mailbox] = [
                event
                for event in found[mailbox]
                if not event.is_all_day or overlaps(_placed(event, zone), start, end)
            ]
    return found


def _placed(event: BasicEvent, zone: zoneinfo.ZoneInfo) -> BasicEvent:
    start = dt.datetime.combine(event.start.date(), dt.time(), tzinfo=zone).astimezone(dt.UTC)
    end = dt.datetime.combine(event.end.date(), dt.time(), tzinfo=zone).astimezone(dt.UTC)
    return BasicEvent(id=event.id, start=start, end=max(start, end), is_all_day=True)


async def _calendar_zones(
    conn: AsyncConnection, tenant_id: str, mailboxes: Sequence[str]
) -> dict[str, zoneinfo.ZoneInfo]:
    zones: dict[str, zoneinfo.ZoneInfo] = {}
    for chunk in chunked(mailboxes, 1000):
        result = await conn.execute(
            select(calendars.c.mailbox, calendars.c.time_zone, tenants.c.default_time_zone)
            .join(tenants, tenants.c.id == calendars.c.tenant_id)
            .where(
                calendars.c.tenant_id == tenant_id,
                among(calendars.c.mailbox, chunk, dialect=conn.dialect.name),
            )
        )
        for mailbox, own, default in result:
            name = own or default
            if is_valid_time_zone(name):
                zones[mailbox] = resolve_time_zone(name)
    return zones
