"""``SqlStore``: the ``Store`` port over SQLAlchemy 2, the same code for SQLite and PostgreSQL.

Writes run in one transaction each (``SqlBase.transaction``). On SQLite every write transaction
starts with ``BEGIN IMMEDIATE`` and, inside one process, runs on the store's one writer thread, so
writers queue there instead of in SQLite's busy handler. On
PostgreSQL ``replace_window`` first updates the calendar row, whose lock it then holds until
commit, so two refreshes of one calendar never interleave.

It runs a little over 500 lines: it is the whole ``Store`` port (tenants, rooms, calendars and
their cached events, the change feed), each method a short transaction; the SQL it shares with
other adapters is already in ``windows``, ``rooms``, ``rows``, ``credentials`` and ``base``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from bookingcache.clock import Clock
from bookingcache.domain.events import BasicEvent, EventDiff
from bookingcache.domain.tenancy import (
    CalendarState,
    GraphCredential,
    Room,
    Tenant,
    TenantSecrets,
)
from bookingcache.errors import (
    BookingCacheError,
    Conflict,
    InvalidInput,
    InvalidWindow,
    NotFound,
    StoreUnavailable,
)
from bookingcache.store.port import CalendarChange, ChangedCalendar, Store, StoredWindow
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql import engine as engines
from bookingcache.store.sql import rooms as room_ops
from bookingcache.store.sql import windows
from bookingcache.store.sql.base import translate_errors
from bookingcache.store.sql.credentials import (
    DEFAULT_TOKEN,
    SqlCredentials,
    insert_read_token,
    reseal_graph_credentials,
)
from bookingcache.store.sql.lists import among
from bookingcache.store.sql.rows import (
    as_utc,
    calendar_from_row,
    require_aware,
    room_from_row,
    tenant_from_row,
    tenant_values,
)
from bookingcache.store.sql.schema import (
    ID,
    MAILBOX,
    calendar_changes,
    calendars,
    client_states,
    rooms,
    tenants,
)

# The calendars of a tenant among mailboxes (casefolded), as every relay call asks.
_NAMES = select(calendars.c.mailbox).where(
    calendars.c.tenant_id == bindparam("tenant_id"),
    func.lower(calendars.c.mailbox).in_(bindparam("folded", expanding=True)),
)


class SqlStore(SqlCredentials):
    """The ``Store`` port over one SQLAlchemy async engine (build it with ``open_store``)."""

    # --- tenants -------------------------------------------------------------------------
    async def create_tenant(
        self,
        tenant: Tenant,
        secrets: TenantSecrets,
        *,
        graph_credential: GraphCredential | None = None,
    ) -> Tenant:
        if not tenant.id or len(tenant.id) > ID:
            raise InvalidInput(f"tenant ids must be 1 to {ID} characters")
        values = tenant_values(tenant) | self.sealed_graph_credential(graph_credential)
        values["notification_mode"] = tenant.way_in.value
        now = self._clock.now()
        created_at = require_aware("created_at", tenant.created_at) if tenant.created_at else now
        row = {
            "id": tenant.id,
            **values,
            "signing_secret": self._box.seal(secrets.signing_secret),
            "created_at": created_at,
            "updated_at": now,
        }

        def work(conn: Connection) -> None:
            conn.execute(insert(tenants), row)
            insert_read_token(conn, tenant.id, DEFAULT_TOKEN, secrets.read_token, at=now)

        try:
            await self.transaction(work)
        except IntegrityError as exc:
            raise Conflict(f"tenant {tenant.id!r} already exists") from exc
        self._notify_tenants(tenant.id)
        return await self.get_tenant(tenant.id)

    async def get_tenant(self, tenant_id: str) -> Tenant:
        async with self.read() as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return tenant_from_row(row)

    async def list_tenants(self) -> Sequence[Tenant]:
        async with self.read() as conn:
            result = await conn.execute(select(tenants).order_by(tenants.c.id))
            return [tenant_from_row(row) for row in result]

    async def update_tenant(self, tenant_id: str, changes: Mapping[str, Any]) -> Tenant:
        values = self.tenant_change_values(changes)

        def work(conn: Connection) -> list[ChangedCalendar]:
            before = conn.execute(
                select(tenants.c.default_time_zone).where(tenants.c.id == tenant_id)
            )
            zone = before.scalar_one_or_none()
            if zone is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            conn.execute(
                update(tenants)
                .where(tenants.c.id == tenant_id)
                .values(**values, updated_at=self._clock.now())
            )
            rezoned: list[str] = []
            if values.get("default_time_zone", zone) != zone:
                # Calendars without a zone of their own now place all-day events elsewhere.
                result = conn.execute(
                    select(calendars.c.mailbox).where(
                        calendars.c.tenant_id == tenant_id, calendars.c.time_zone.is_(None)
                    )
                )
                rezoned = list(result.scalars())
            return self._reload(conn, tenant_id, rezoned)

        self._notify(await self.transaction(work))
        self._notify_tenants(tenant_id)
        return await self.get_tenant(tenant_id)

    async def delete_tenant(self, tenant_id: str) -> None:
        def work(conn: Connection) -> list[ChangedCalendar]:
            result = conn.execute(
                select(calendars.c.mailbox).where(calendars.c.tenant_id == tenant_id)
            )
            mailboxes = list(result.scalars())
            deleted = conn.execute(delete(tenants).where(tenants.c.id == tenant_id))
            if deleted.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found")
            # Tell read models (in every process) to evict the tenant's calendars.
            return windows.append_changes(
                conn, [(tenant_id, mailbox) for mailbox in mailboxes], at=self._clock.now()
            )

        self._notify(await self.transaction(work))
        self._notify_rooms(tenant_id)
        self._notify_tenants(tenant_id)

    async def check_box(self) -> None:
        """``SecretsUnreadable`` unless the box opens a stored secret (when there is one): a
        process with the wrong key refuses to start instead of failing every signed call."""
        async with self.read() as conn:
            sealed = await conn.scalar(select(tenants.c.signing_secret).limit(1))
        if sealed is not None:
            self._box.open(str(sealed))

    async def reseal_secrets(self) -> int:
        """Seal every stored secret again with the box's newest key (after a new key was put
        first); how many were sealed. One transaction: all or nothing."""

        def work(conn: Connection) -> int:
            count = 0
            query = select(
                tenants.c.id, tenants.c.signing_secret, tenants.c.previous_signing_secret
            )
            for row in conn.execute(query).all():
                previous = row.previous_signing_secret
                conn.execute(
                    update(tenants)
                    .where(tenants.c.id == row.id)
                    .values(
                        signing_secret=self._box.reseal(row.signing_secret),
                        previous_signing_secret=None
                        if previous is None
                        else self._box.reseal(previous),
                    )
                )
                count += 1 if previous is None else 2
            count += reseal_graph_credentials(conn, self._box)
            states = conn.execute(select(client_states.c.id, client_states.c.secret)).all()
            for state in states:
                conn.execute(
                    update(client_states)
                    .where(client_states.c.id == state.id)
                    .values(secret=self._box.reseal(state.secret))
                )
                count += 1
            return count

        return await self.transaction(work)

    async def put_room(self, room: Room) -> tuple[Room, bool]:
        room_ops.check_rooms(room.tenant_id, [room])

        def work(conn: Connection) -> tuple[int, list[ChangedCalendar]]:
            room_ops.require_tenant(conn, room.tenant_id)
            created, _, dropped = room_ops.upsert_rooms(
                conn, room.tenant_id, [room], at=self._clock.now()
            )
            return created, self._reload(conn, room.tenant_id, dropped)

        created, changes = await self.transaction(work)
        self._notify(changes)
        self._notify_rooms(room.tenant_id)
        return await self.get_room(room.tenant_id, room.room_id), created == 1

    async def get_room(self, tenant_id: str, room_id: str) -> Room:
        async with self.read() as conn:
            result = await conn.execute(
                select(rooms).where(rooms.c.tenant_id == tenant_id, rooms.c.room_id == room_id)
            )
            row = result.first()
            if row is None:
                await conn.run_sync(room_ops.require_tenant, tenant_id)
                raise NotFound(f"room {room_id!r} of tenant {tenant_id!r} not found")
        return room_from_row(row)

    async def list_rooms(
        self, tenant_id: str, *, building: str | None = None, floor: str | None = None
    ) -> Sequence[Room]:
        statement = select(rooms).where(rooms.c.tenant_id == tenant_id)
        if building is not None:
            statement = statement.where(rooms.c.building == building)
        if floor is not None:
            statement = statement.where(rooms.c.floor == floor)
        async with self.read() as conn:
            await conn.run_sync(room_ops.require_tenant, tenant_id)
            result = await conn.execute(statement.order_by(rooms.c.room_id))
            return [room_from_row(row) for row in result]

    async def delete_room(self, tenant_id: str, room_id: str) -> None:
        def work(conn: Connection) -> list[ChangedCalendar]:
            result = conn.execute(
                delete(rooms)
                .where(rooms.c.tenant_id == tenant_id, rooms.c.room_id == room_id)
                .returning(rooms.c.mailbox)
            )
            mailbox = result.scalar_one_or_none()
            if mailbox is None:
                room_ops.require_tenant(conn, tenant_id)
                raise NotFound(f"room {room_id!r} of tenant {tenant_id!r} not found")
            room_ops.rooms_changed(conn, tenant_id, at=self._clock.now())
            dropped = room_ops.drop_unlinked_calendars(conn, tenant_id, [mailbox])
            return self._reload(conn, tenant_id, dropped)

        self._notify(await self.transaction(work))
        self._notify_rooms(tenant_id)
        self._notify_tenants(tenant_id)

    async def import_rooms(self, tenant_id: str, rooms_in: Sequence[Room]) -> tuple[int, int]:
        room_ops.check_rooms(tenant_id, rooms_in)

        def work(conn: Connection) -> tuple[int, int, list[ChangedCalendar]]:
            room_ops.require_tenant(conn, tenant_id)
            created, updated, dropped = room_ops.upsert_rooms(
                conn, tenant_id, rooms_in, at=self._clock.now()
            )
            return created, updated, self._reload(conn, tenant_id, dropped)

        created, updated, changes = await self.transaction(work)
        self._notify(changes)
        self._notify_rooms(tenant_id)
        return created, updated

    def _reload(
        self, conn: Connection, tenant_id: str, mailboxes: Sequence[str]
    ) -> list[ChangedCalendar]:
        """Feed rows for calendars read models must reload (dropped or placed differently)."""
        keys = [(tenant_id, mailbox) for mailbox in mailboxes]
        return windows.append_changes(conn, keys, at=self._clock.now())

    # --- calendars and cached events -----------------------------------------------------
    def _calendar_query(self) -> Any:
        return select(calendars, tenants.c.default_time_zone).join(
            tenants, tenants.c.id == calendars.c.tenant_id
        )

    async def get_calendar(self, tenant_id: str, mailbox: str) -> CalendarState:
        statement = self._calendar_query().where(
            calendars.c.tenant_id == tenant_id, calendars.c.mailbox == mailbox
        )
        async with self.read() as conn:
            row = (await conn.execute(statement)).first()
            if row is None:
                await conn.run_sync(room_ops.require_tenant, tenant_id)
                raise NotFound(f"no room of tenant {tenant_id!r} is linked to {mailbox!r}")
        return calendar_from_row(row)

    async def list_calendars(
        self, tenant_id: str | None = None, *, mailboxes: Sequence[str] | None = None
    ) -> Sequence[CalendarState]:
        statement = self._calendar_query()
        if tenant_id is not None:
            statement = statement.where(calendars.c.tenant_id == tenant_id)
        if mailboxes is None:
            async with self.read() as conn:
                result = await conn.execute(
                    statement.order_by(calendars.c.tenant_id, calendars.c.mailbox)
                )
                return [calendar_from_row(row) for row in result]
        found: list[CalendarState] = []
        async with self.read() as conn:
            for chunk in windows.chunked(list(dict.fromkeys(mailboxes)), 500):
                result = await conn.execute(
                    statement.where(among(calendars.c.mailbox, chunk, dialect=conn.dialect.name))
                )
                found.extend(calendar_from_row(row) for row in result)
        found.sort(key=lambda state: (state.tenant_id, state.mailbox))
        return found

    async def replace_window(
        self,
        tenant_id: str,
        mailbox: str,
        *,
        window_start: dt.datetime,
        window_end: dt.datetime,
        events: Sequence[BasicEvent],
        synced_at: dt.datetime,
        delta_link: str | None = None,
        claim: tuple[int, str] | None = None,
    ) -> EventDiff:
        window_start = require_aware("window_start", window_start)
        window_end = require_aware("window_end", window_end)
        synced_at = require_aware("synced_at", synced_at)
        if window_end <= window_start:
            raise InvalidWindow("the window must end after it starts")
        given = windows.events_by_id(events, window_start=window_start, window_end=window_end)

        def work(conn: Connection) -> tuple[EventDiff, list[ChangedCalendar]]:
            if claim is not None:
                windows.hold_claim(conn, *claim)
            recovered = windows.record_success_and_lock(
                conn,
                tenant_id,
                mailbox,
                window_start=window_start,
                window_end=window_end,
                synced_at=synced_at,
                delta_link=delta_link,
            )
            diff = windows.apply_window(
                conn,
                tenant_id,
                mailbox,
                window_start=window_start,
                window_end=window_end,
                given=given,
            )
            if diff.is_empty and not recovered:
                return diff, []
            # A calendar back from stale (or synced for the first time) changes what its rooms
            # show with the same events: the feed says so, as for a change of events.
            return diff, windows.append_changes(conn, [(tenant_id, mailbox)], at=synced_at)

        diff, changes = await self.transaction(work)
        self._notify(changes)
        return diff

    async def calendar_names(self, tenant_id: str, mailboxes: Collection[str]) -> dict[str, str]:
        folded = {m.casefold() for m in mailboxes if 0 < len(m) <= MAILBOX}
        found: dict[str, str] = {}
        async with self.read() as conn:
            for chunk in windows.chunked(sorted(folded)):
                rows = await conn.execute(_NAMES, {"tenant_id": tenant_id, "folded": list(chunk)})
                for row in rows:
                    found[row.mailbox.casefold()] = row.mailbox
        return {m: found[m.casefold()] for m in mailboxes if m.casefold() in found}

    async def record_sync_error(
        self, tenant_id: str, mailbox: str, *, error: str, at: dt.datetime
    ) -> None:
        at = require_aware("at", at)
        await self._update_calendar(
            tenant_id,
            mailbox,
            last_error=error,
            last_refresh_at=at,
            consecutive_failures=calendars.c.consecutive_failures + 1,
        )

    async def set_delta_link(self, tenant_id: str, mailbox: str, delta_link: str | None) -> None:
        """Keep (or forget, with ``None``) the calendarView delta link of a calendar."""
        await self._update_calendar(tenant_id, mailbox, delta_link=delta_link)

    async def _update_calendar(self, tenant_id: str, mailbox: str, **values: Any) -> None:
        def work(conn: Connection) -> None:
            result = conn.execute(
                update(calendars)
                .where(calendars.c.tenant_id == tenant_id, calendars.c.mailbox == mailbox)
                .values(**values)
            )
            if result.rowcount == 0:
                room_ops.require_tenant(conn, tenant_id)
                raise NotFound(f"no room of tenant {tenant_id!r} is linked to {mailbox!r}")

        await self.transaction(work)

    async def events_in_window(
        self,
        tenant_id: str,
        mailboxes: Sequence[str],
        *,
        start: dt.datetime,
        end: dt.datetime,
    ) -> dict[str, list[BasicEvent]]:
        start = require_aware("start", start)
        end = require_aware("end", end)
        async with self.read() as conn:
            return await windows.load_window(conn, tenant_id, mailboxes, start=start, end=end)

    async def stored_window(
        self, tenant_id: str, mailbox: str, *, start: dt.datetime, end: dt.datetime
    ) -> StoredWindow | None:
        start = require_aware("start", start)
        end = require_aware("end", end)
        async with self.read() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the row and the events: a refresh that commits between the
                # two reads would pair an older link with newer events.
                await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            row = (
                await conn.execute(
                    select(
                        calendars.c.window_start, calendars.c.window_end, calendars.c.delta_link
                    ).where(calendars.c.tenant_id == tenant_id, calendars.c.mailbox == mailbox)
                )
            ).first()
            if row is None:
                return None
            found = await windows.load_window(conn, tenant_id, [mailbox], start=start, end=end)
        return StoredWindow(
            window_start=as_utc(row.window_start) if row.window_start else None,
            window_end=as_utc(row.window_end) if row.window_end else None,
            delta_link=row.delta_link,
            events=found.get(mailbox, []),
        )

    # --- change feed ---------------------------------------------------------------------
    async def changes_since(self, seq: int, *, limit: int = 1000) -> Sequence[CalendarChange]:
        async with self.read() as conn:
            result = await conn.execute(
                select(calendar_changes)
                .where(calendar_changes.c.seq > seq)
                .order_by(calendar_changes.c.seq)
                .limit(max(1, limit))
            )
            return [
                CalendarChange(seq=row.seq, tenant_id=row.tenant_id, mailbox=row.mailbox, at=row.at)
                for row in result
            ]

    async def layout_changed_at(self, tenant_id: str) -> dt.datetime:
        async with self.read() as conn:
            row = (
                await conn.execute(
                    select(tenants.c.updated_at, tenants.c.rooms_changed_at).where(
                        tenants.c.id == tenant_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        updated: dt.datetime = row.updated_at
        rooms_at: dt.datetime | None = row.rooms_changed_at
        return updated if rooms_at is None else max(updated, rooms_at)

    async def last_change_seq(self) -> int:
        async with self.read() as conn:
            result = await conn.execute(select(func.max(calendar_changes.c.seq)))
            return int(result.scalar_one_or_none() or 0)

    async def prune_changes(
        self, *, before: dt.datetime, chunk: int = 1000, max_chunks: int = 20
    ) -> int:
        """Rows are read in seq order (the primary key's index) and a pass stops at the first
        row as young as ``before``, so it never scans the feed for old rows that are not there;
        only rows read and found older are deleted."""
        before = require_aware("before", before)

        def work(conn: Connection) -> int:
            newest = conn.execute(select(func.max(calendar_changes.c.seq))).scalar() or 0
            rows = conn.execute(
                select(calendar_changes.c.seq, calendar_changes.c.at)
                .where(calendar_changes.c.seq < newest)
                .order_by(calendar_changes.c.seq)
                .limit(chunk)
            )
            last = None
            for row in rows:
                if as_utc(row.at) >= before:
                    break
                last = row.seq
            if last is None:
                return 0
            result = conn.execute(delete(calendar_changes).where(calendar_changes.c.seq <= last))
            return int(result.rowcount)

        return await self.in_chunks(work, chunk=chunk, max_chunks=max_chunks)


async def open_store(
    url: str,
    *,
    box: SecretBox,
    migrate: bool = True,
    clock: Clock | None = None,
    fsync: bool = False,
    idle_transaction_s: float = engines.IDLE_TRANSACTION_S,
    pool_size: int = engines.POOL_SIZE,
) -> SqlStore:
    """Open the store at ``url`` (see ``engine.normalize_database_url``), migrating it to the
    newest schema unless ``migrate`` is false; ``StoreUnavailable`` if the database cannot be
    reached (or, without ``migrate``, is not at the newest schema), ``SecretsUnreadable`` if
    ``box`` does not open the secrets it already keeps. ``fsync``: on SQLite, every commit is
    flushed to disk before it returns. ``idle_transaction_s`` and ``pool_size``: see
    ``engine.create_engine``."""
    engines.create_private_sqlite_file(url)
    engine = engines.create_engine(
        url, fsync=fsync, idle_transaction_s=idle_transaction_s, pool_size=pool_size
    )
    try:
        async with translate_errors():
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            except (BookingCacheError, DBAPIError, OSError, TimeoutError):
                raise
            except Exception as exc:  # drivers raise their own errors while connecting
                raise StoreUnavailable(f"the database is not reachable: {exc}") from exc
            if migrate:
                await engines.migrate(engine, box)
        store = SqlStore(engine, box=box, clock=clock, fsync=fsync)
        await store.ping()
        await store.check_box()
    except BaseException:
        await engine.dispose()
        raise
    return store


def _fills_the_port(store: SqlStore) -> Store:
    """Never called: mypy checks here that ``SqlStore`` has every method of the port."""
    return store
