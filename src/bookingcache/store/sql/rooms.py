"""Room links and the calendars they imply, inside a transaction ``SqlStore`` opened (plain
synchronous SQLAlchemy, as ``SqlBase.transaction`` runs it).

Every linked mailbox has exactly one calendar row; when the last room linking a mailbox goes
(unlinked or re-linked elsewhere) its calendar and cached events go too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from bookingcache.domain.tenancy import Room
from bookingcache.domain.timezones import is_valid_time_zone
from bookingcache.errors import InvalidInput, NotFound
from bookingcache.store.sql.rows import room_values
from bookingcache.store.sql.schema import ID, MAILBOX, calendars, rooms, tenants
from bookingcache.store.sql.windows import chunked

MAX_CAPACITY = 100_000  # seats; the API refuses more before the store sees it


def check_rooms(tenant_id: str, batch: Sequence[Room]) -> None:
    """``InvalidInput`` naming the first room (1-based) that cannot be stored."""
    seen: set[str] = set()
    for number, room in enumerate(batch, start=1):
        where = f"room {number} ({room.room_id!r})"
        if room.tenant_id != tenant_id:
            raise InvalidInput(f"{where} belongs to tenant {room.tenant_id!r}, not {tenant_id!r}")
        if not room.room_id or len(room.room_id) > ID:
            raise InvalidInput(f"{where}: the room id must be 1 to {ID} characters")
        if not room.mailbox or len(room.mailbox) > MAILBOX:
            raise InvalidInput(f"{where}: the mailbox must be 1 to {MAILBOX} characters")
        if not room.name or len(room.name) > 300:
            raise InvalidInput(f"{where}: the name must be 1 to 300 characters")
        if room.building is not None and len(room.building) > ID:
            raise InvalidInput(f"{where}: the building must be at most {ID} characters")
        if room.floor is not None and len(room.floor) > 64:
            raise InvalidInput(f"{where}: the floor must be at most 64 characters")
        if room.capacity is not None and not 0 <= room.capacity <= MAX_CAPACITY:
            raise InvalidInput(f"{where}: the capacity must be 0 to {MAX_CAPACITY}")
        if room.time_zone is not None and not is_valid_time_zone(room.time_zone):
            raise InvalidInput(f"{where}: unknown time zone {room.time_zone!r}")
        if room.room_id in seen:
            raise InvalidInput(f"{where}: the room id appears more than once")
        seen.add(room.room_id)


def require_tenant(conn: Connection, tenant_id: str) -> None:
    if (conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))).first() is None:
        raise NotFound(f"tenant {tenant_id!r} not found")


def rooms_changed(conn: Connection, tenant_id: str, *, at: dt.datetime) -> None:
    """Date the tenant's rooms as written now (a change-stream client away since then is sent a
    reset when it comes back: ``read.stream``)."""
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(rooms_changed_at=at))


def upsert_rooms(
    conn: Connection, tenant_id: str, batch: Sequence[Room], *, at: dt.datetime
) -> tuple[int, int, list[str]]:
    """Create or replace the rooms; returns (created, updated, mailboxes whose calendar was
    dropped because no room links them any more, or whose time zone changed: in both cases
    read models must reload them)."""
    previous: dict[str, str] = {}
    for chunk in chunked([room.room_id for room in batch]):
        result = conn.execute(
            select(rooms.c.room_id, rooms.c.mailbox).where(
                rooms.c.tenant_id == tenant_id, rooms.c.room_id.in_(chunk)
            )
        )
        previous.update((row[0], row[1]) for row in result)

    new = [room_values(room, at=at) for room in batch if room.room_id not in previous]
    if new:
        conn.execute(insert(rooms), new)
    replaced = []
    for room in batch:
        if room.room_id in previous:
            values = room_values(room, at=at)
            del values["tenant_id"], values["room_id"]
            replaced.append({"key_tenant": tenant_id, "key_room": room.room_id, **values})
    if replaced:
        conn.execute(
            update(rooms).where(
                rooms.c.tenant_id == bindparam("key_tenant"),
                rooms.c.room_id == bindparam("key_room"),
            ),
            replaced,
        )

    rooms_changed(conn, tenant_id, at=at)
    zones = {room.mailbox: room.time_zone for room in batch}  # the last room's zone wins
    rezoned = _ensure_calendars(conn, tenant_id, zones, at=at)
    left = {
        mailbox
        for room_id, mailbox in previous.items()
        if mailbox not in zones  # re-linked away from this mailbox
    }
    dropped = drop_unlinked_calendars(conn, tenant_id, sorted(left))
    return len(new), len(replaced), [*dropped, *rezoned]


def _ensure_calendars(
    conn: Connection, tenant_id: str, zones: dict[str, str | None], *, at: dt.datetime
) -> list[str]:
    """Create the missing calendars and set each one's zone; returns the existing calendars
    whose zone changed (their all-day events now fall elsewhere)."""
    current: dict[str, str | None] = {}
    for chunk in chunked(list(zones)):
        result = conn.execute(
            select(calendars.c.mailbox, calendars.c.time_zone).where(
                calendars.c.tenant_id == tenant_id, calendars.c.mailbox.in_(chunk)
            )
        )
        current.update((row[0], row[1]) for row in result)
    missing = [
        {"tenant_id": tenant_id, "mailbox": mailbox, "time_zone": zone, "created_at": at}
        for mailbox, zone in zones.items()
        if mailbox not in current
    ]
    if missing:
        conn.execute(insert(calendars), missing)
    rezoned = [
        mailbox
        for mailbox, zone in zones.items()
        if mailbox in current and current[mailbox] != zone
    ]
    moved = [
        {"key_tenant": tenant_id, "key_mailbox": mailbox, "time_zone": zones[mailbox]}
        for mailbox in rezoned
    ]
    if moved:
        conn.execute(
            update(calendars).where(
                calendars.c.tenant_id == bindparam("key_tenant"),
                calendars.c.mailbox == bindparam("key_mailbox"),
            ),
            moved,
        )
    return rezoned


def drop_unlinked_calendars(
    conn: Connection, tenant_id: str, mailboxes: Sequence[str]
) -> list[str]:
    """Delete the calendars (with their events and jobs) of those mailboxes no room links."""
    if not mailboxes:
        return []
    linked: set[str] = set()
    for chunk in chunked(mailboxes):
        result = conn.execute(
            select(rooms.c.mailbox)
            .where(rooms.c.tenant_id == tenant_id, rooms.c.mailbox.in_(chunk))
            .distinct()
        )
        linked.update(result.scalars())
    unlinked = [mailbox for mailbox in mailboxes if mailbox not in linked]
    for chunk in chunked(unlinked):
        conn.execute(
            delete(calendars).where(
                calendars.c.tenant_id == tenant_id, calendars.c.mailbox.in_(chunk)
            )
        )
    return unlinked
