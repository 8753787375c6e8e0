"""Room availability answers, computed from the read model and encoded as JSON once.

An answer depends on the request (window, minimum free length, staleness bound), the room
link, the calendar's events and its last sync, and on *now* only through the status now and its
next change. It is therefore kept with the calendar's cached events and reused for the same
request until the status next changes (or, with no change ahead, until the window ends) or
until the data would turn stale; re-reading the calendar or the room index drops it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable

from bookingcache.domain.availability import (
    RoomAvailability,
    room_availability,
    validate_window,
)
from bookingcache.domain.intervals import Interval
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import InvalidWindow
from bookingcache.read.model import ReadModel, RoomEntry, TenantView

UTC = dt.UTC
MAX_WINDOW_DAYS = 62
_MEMO_PER_CALENDAR = 2
# Whole bulk bodies kept per tenant, by total size (a floor of 1,000 rooms is about 3 MB).
_WHOLE_ANSWER_BYTES = 16 * 1024 * 1024
_FOREVER = dt.datetime.max.replace(tzinfo=UTC)
# Windows must lie in this span: far enough for any calendar, and far from the ends of
# datetime's range, where placing, widening or converting an instant would overflow.
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=UTC)


def utc_text(instant: dt.datetime) -> str:
    """ISO 8601 in UTC with ``Z``. Whole seconds (slot boundaries, which repeat across rooms
    and requests) are formatted once and kept; other instants (a calendar's last sync, a new
    one at every refresh) are formatted each time, so they never fill the memory."""
    if instant.microsecond:
        return _utc_iso(instant)
    return _kept_utc_text(instant)


def _utc_iso(instant: dt.datetime) -> str:
    text = instant.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# About 4 MB when full: a cached horizon's boundaries are a few thousand distinct instants.
_kept_utc_text = functools.lru_cache(maxsize=1 << 14)(_utc_iso)


def checked_window(start: dt.datetime, end: dt.datetime) -> Interval:
    """``validate_window`` (at most 62 days, start before end, with offsets), inside the
    supported span."""
    try:
        window = validate_window(start, end, max_days=MAX_WINDOW_DAYS)
    except OverflowError:
        raise InvalidWindow("the window is out of range") from None
    if window.start < EARLIEST or window.end > LATEST:
        raise InvalidWindow(f"the window must lie between {EARLIEST.year} and {LATEST.year}")
    return window


def end_of_local_day(instant: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The next local midnight after ``instant`` in ``tz``, as UTC."""
    local = instant.astimezone(tz)
    following = local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(following, dt.time(), tzinfo=tz).astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def _rest_of_day(minute: dt.datetime, tz: dt.tzinfo) -> Interval:
    """The default window from ``minute`` (UTC) to the end of its day in ``tz``: the same for
    every request of that minute and zone, so worked out once."""
    return checked_window(minute, end_of_local_day(minute, tz))


def request_window(
    start: dt.datetime | None, end: dt.datetime | None, *, now: dt.datetime, tz: dt.tzinfo
) -> Interval:
    """The asked window; by default from now (to the minute) to the end of the room's day."""
    if start is None:
        start = now.astimezone(UTC).replace(second=0, microsecond=0)
        if end is None and EARLIEST <= start < LATEST:
            return _rest_of_day(start, tz)
    if end is None:
        day_of = start if start.tzinfo is not None and EARLIEST <= start < LATEST else now
        end = end_of_local_day(day_of, tz)
    return checked_window(start, end)


def _ranges(intervals: Iterable[Interval]) -> str:
    return ",".join(
        f'{{"start":"{utc_text(i.start)}","end":"{utc_text(i.end)}"}}' for i in intervals
    )


def _or_null(instant: dt.datetime | None) -> str:
    return f'"{utc_text(instant)}"' if instant is not None else "null"


def encode_answer(
    entry: RoomEntry, window: Interval, answer: RoomAvailability, synced: dt.datetime | None
) -> bytes:
    """The answer as the JSON object ``RoomAvailabilityOut`` describes."""
    room = entry.room
    head = json.dumps(
        {
            "room_id": room.room_id,
            "mailbox": room.mailbox,
            "name": room.name,
            "building": room.building,
            "floor": room.floor,
            "time_zone": entry.time_zone,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    segments = ",".join(
        f'{{"start":"{utc_text(s.start)}","end":"{utc_text(s.end)}","status":"{s.status.value}"}}'
        for s in answer.segments
    )
    next_status = f'"{answer.next_status.value}"' if answer.next_status else "null"
    text = (
        f'{head[:-1]},"window":{{"start":"{utc_text(window.start)}",'
        f'"end":"{utc_text(window.end)}"}},"status":"{answer.status.value}",'
        f'"next_change_at":{_or_null(answer.next_change_at)},"next_status":{next_status},'
        f'"stale":{"true" if answer.stale else "false"},"last_synced_at":{_or_null(synced)},'
        f'"busy":[{_ranges(answer.busy)}],"free":[{_ranges(answer.free)}],'
        f'"segments":[{segments}]}}'
    )
    return text.encode()


def _valid_until(
    answer: RoomAvailability, window: Interval, synced: dt.datetime | None, bound: dt.timedelta
) -> dt.datetime:
    """Until when the same request gets the same answer: the status holds until its next
    change (or, with none, the window's end) and freshness until the staleness bound."""
    if answer.stale:
        return _FOREVER  # stays stale until a sync, and the memo is keyed by the last sync
    until = answer.next_change_at or window.end
    if synced is not None:
        until = min(until, synced + bound)
    return until


async def room_answers(
    model: ReadModel,
    view: TenantView,
    entries: list[RoomEntry],
    *,
    tenant: Tenant,
    now: dt.datetime,
    start: dt.datetime | None,
    end: dt.datetime | None,
    min_free: dt.timedelta,
) -> list[bytes]:
    """Each room's encoded answer, from the memo when the same request is still valid."""
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    await model.confirm_sync_state(view, [e.mailbox for e in entries], now=now, bound=bound)
    answers, _ = await _answers(
        model, view, entries, now=now, start=start, end=end, min_free=min_free, bound=bound
    )
    return answers


async def bulk_answer(
    model: ReadModel,
    view: TenantView,
    entries: list[RoomEntry],
    *,
    selection: tuple[object, ...],
    tenant: Tenant,
    now: dt.datetime,
    start: dt.datetime | None,
    end: dt.datetime | None,
    min_free: dt.timedelta,
) -> bytes:
    """``{"rooms": [...]}`` for the rooms. The whole body is reused for the same request while
    the view has not changed (its generation) and every room's answer is still valid."""
    bound = dt.timedelta(seconds=tenant.staleness_bound_s)
    await model.confirm_sync_state(view, [e.mailbox for e in entries], now=now, bound=bound)
    minute = now.replace(second=0, microsecond=0) if start is None else None
    key = (selection, start, end, min_free, bound, minute)
    generation = view.generation
    hit = view.answers.get(key)
    if hit is not None and hit[0] == generation and hit[1] <= now < hit[2]:
        body: bytes = hit[3]
        return body
    answers, until = await _answers(
        model, view, entries, now=now, start=start, end=end, min_free=min_free, bound=bound
    )
    body = b"".join((b'{"rooms":[', b",".join(answers), b"]}"))
    if until is not None and view.generation == generation and len(body) <= _WHOLE_ANSWER_BYTES:
        view.answers.pop(key, None)
        kept = sum(len(entry[3]) for entry in view.answers.values())
        while view.answers and kept + len(body) > _WHOLE_ANSWER_BYTES:
            oldest = next(iter(view.answers))
            kept -= len(view.answers.pop(oldest)[3])
        view.answers[key] = (generation, now, until, body)
    return body


async def _answers(
    model: ReadModel,
    view: TenantView,
    entries: list[RoomEntry],
    *,
    now: dt.datetime,
    start: dt.datetime | None,
    end: dt.datetime | None,
    min_free: dt.timedelta,
    bound: dt.timedelta,
) -> tuple[list[bytes], dt.datetime | None]:
    """The rooms' answers and until when all of them stay valid (None: not reusable, some
    came from outside the cached horizon)."""
    # Rooms in one zone share their window: validate it once per zone.
    windows: dict[dt.tzinfo, Interval] = {}
    answers: list[bytes] = []
    valid_until: dt.datetime | None = _FOREVER
    for entry in entries:
        window = windows.get(entry.tz)
        if window is None:
            window = windows[entry.tz] = request_window(start, end, now=now, tz=entry.tz)
        calendar = view.calendar(entry.mailbox)
        key = (entry.room_id, window.start, window.end, min_free, bound)
        synced = calendar.last_success_at
        hit = calendar.memo.get(key)
        if hit is not None and hit[0] is entry and hit[1] == synced and hit[2] <= now < hit[3]:
            answers.append(hit[4])
            if valid_until is not None and hit[3] < valid_until:
                valid_until = hit[3]
            continue
        span_start, span_end = min(now, window.start), max(now, window.end)
        events = await model.events(view, entry.mailbox, start=span_start, end=span_end)
        answer = room_availability(
            events,
            now=now,
            window=window,
            tz=entry.tz,
            min_free=min_free,
            last_success_at=synced,
            staleness_bound=bound,
        )
        encoded = encode_answer(entry, window, answer, synced)
        if view.covers(span_start, span_end):
            if len(calendar.memo) >= _MEMO_PER_CALENDAR and key not in calendar.memo:
                calendar.memo.pop(next(iter(calendar.memo)))
            until = _valid_until(answer, window, synced, bound)
            calendar.memo[key] = (entry, synced, now, until, encoded)
            if valid_until is not None and until < valid_until:
                valid_until = until
        else:
            valid_until = None
        answers.append(encoded)
    return answers, valid_until
