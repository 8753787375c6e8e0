"""The store port: tenants, room links, calendars and their cached events, and the change
feed. The service sees this Protocol; ``store.sql.store.SqlStore`` fills it for SQLite and
PostgreSQL alike, and one contract suite (tests/store) holds both to the same behaviour."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bookingcache.domain.events import BasicEvent, EventDiff
from bookingcache.domain.tenancy import (
    CalendarState,
    GraphCredential,
    ReadTokenInfo,
    Room,
    Tenant,
    TenantSecrets,
)


@dataclass(frozen=True, slots=True)
class CalendarChange:
    """One entry of the change feed: a calendar whose cached events changed."""

    seq: int
    tenant_id: str
    mailbox: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class ChangedCalendar:
    """A calendar a write just committed a feed entry for, as this process's change listeners
    hear of it. No feed position: on PostgreSQL the entry's seq is only settled inside the
    commit (migration 0012); ``changes_since`` gives entries with their seqs."""

    tenant_id: str
    mailbox: str


ChangeListener = Callable[[ChangedCalendar], None]
RoomsListener = Callable[[str], None]
TenantsListener = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """A calendar's window as the last refresh wrote it: bounds, delta link, events."""

    window_start: dt.datetime | None
    window_end: dt.datetime | None
    delta_link: str | None
    events: list[BasicEvent]


class Store(Protocol):
    # --- lifecycle ---------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers and migrations are at head."""
        ...

    async def close(self) -> None: ...

    # --- tenants -----------------------------------------------------------------------------
    async def create_tenant(
        self,
        tenant: Tenant,
        secrets: TenantSecrets,
        *,
        graph_credential: GraphCredential | None = None,
    ) -> Tenant:
        """Insert a tenant; ``Conflict`` if the id exists. Stores a hash of the read token, and
        seals the signing secret and ``graph_credential`` (its own Graph app's, if any). A
        tenant without a ``notification_mode`` gets its event source's default."""
        ...

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """``NotFound`` if unknown."""
        ...

    async def list_tenants(self) -> Sequence[Tenant]: ...

    async def update_tenant(self, tenant_id: str, changes: Mapping[str, Any]) -> Tenant:
        """Apply field changes (names as in ``Tenant``, and ``graph_credential``: a
        ``GraphCredential`` to seal, or None to drop it); ``NotFound`` if unknown. A change of
        ``graph`` or ``graph_credential`` bumps the graph access's revision; ``graph`` None
        drops the credential too."""
        ...

    async def graph_credential(self, tenant_id: str) -> GraphCredential | None:
        """The tenant's own Graph app credential, opened; None when it uses the service's
        shared app. ``NotFound`` if unknown."""
        ...

    async def delete_tenant(self, tenant_id: str) -> None:
        """Delete the tenant and everything it owns; ``NotFound`` if unknown."""
        ...

    async def get_signing_secret(self, tenant_id: str) -> str:
        """The tenant's current signing secret: what the service signs with."""
        ...

    async def signing_secrets(self, tenant_id: str) -> list[str]:
        """The signing secrets that verify now: the current one, and after a rotation the
        previous one until its overlap ends; ``NotFound`` if unknown."""
        ...

    async def signed_tenant(self, tenant_id: str) -> tuple[Tenant, list[str]]:
        """The tenant and its ``signing_secrets``, in one read; ``NotFound`` if unknown."""
        ...

    async def rotate_signing_secret(
        self, tenant_id: str, secret: str, *, overlap: dt.timedelta
    ) -> dt.datetime:
        """Make ``secret`` current; the current one keeps verifying for ``overlap`` (replacing
        any earlier previous one). When the overlap ends; ``NotFound`` if unknown."""
        ...

    async def check_read_token(self, tenant_id: str, token: str) -> bool:
        """Constant-time check of a presented read token against the tenant's stored hashes."""
        ...

    async def set_tenant_secrets(self, tenant_id: str, secrets: TenantSecrets) -> None:
        """Replace, at once, the signing secret (no overlap) and every read token by the one
        given (named ``default``); ``NotFound`` if unknown."""
        ...

    async def create_read_token(self, tenant_id: str, name: str, token: str) -> ReadTokenInfo:
        """Add a named read token (only its hash is kept); ``Conflict`` if the name is taken or
        the tenant has the most it may, ``NotFound`` if the tenant is unknown."""
        ...

    async def list_read_tokens(self, tenant_id: str) -> Sequence[ReadTokenInfo]:
        """The tenant's read tokens, oldest first; ``NotFound`` if unknown."""
        ...

    async def revoke_read_token(self, tenant_id: str, name: str) -> None:
        """Delete the named read token; ``NotFound`` if the tenant or the name is unknown."""
        ...

    async def note_read_tokens_used(self, uses: Mapping[str, dt.datetime]) -> None:
        """Record when read tokens (by the hex SHA-256 of each) were last used; an earlier
        instant than the one stored changes nothing."""
        ...

    async def reseal_secrets(self) -> int:
        """Seal every stored secret (signing secrets, clientStates) again with the newest
        secrets key, in one transaction; how many. ``SecretsUnreadable`` if one does not open."""
        ...

    async def read_token_owners(self) -> dict[str, str]:
        """The tenant of every read token, by the token's SHA-256 (hex), in one read: what a
        process keeps in memory to check read tokens without a database round trip."""
        ...

    # --- rooms -------------------------------------------------------------------------------
    async def put_room(self, room: Room) -> tuple[Room, bool]:
        """Create or replace a room link; returns (room, created). Ensures its calendar exists."""
        ...

    async def get_room(self, tenant_id: str, room_id: str) -> Room: ...

    async def list_rooms(
        self, tenant_id: str, *, building: str | None = None, floor: str | None = None
    ) -> Sequence[Room]: ...

    async def delete_room(self, tenant_id: str, room_id: str) -> None: ...

    async def import_rooms(self, tenant_id: str, rooms: Sequence[Room]) -> tuple[int, int]:
        """Upsert all rooms in one transaction (all or nothing); returns (created, updated)."""
        ...

    # --- calendars and cached events ---------------------------------------------------------
    async def get_calendar(self, tenant_id: str, mailbox: str) -> CalendarState: ...

    async def list_calendars(
        self, tenant_id: str | None = None, *, mailboxes: Sequence[str] | None = None
    ) -> Sequence[CalendarState]:
        """The calendars (of one tenant), ordered by tenant and mailbox; only those of
        ``mailboxes`` when given (unknown ones are left out)."""
        ...

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
        """Atomically make the cached events of ``mailbox`` that overlap the window exactly
        ``events``, record a successful sync at ``synced_at`` together with the source's
        ``delta_link`` for this window (``None`` clears it), append to the change feed when
        anything changed or the calendar was unknown or stale until now (its rooms' displayed
        state changes), and return the diff. Events outside the window are untouched.

        With ``claim`` (the id and lease of the refresh job that read them) the write is
        fenced: it happens only while that claim is still the job's, else
        ``store.jobs.ClaimLost`` and nothing is written."""
        ...

    async def calendar_names(self, tenant_id: str, mailboxes: Collection[str]) -> dict[str, str]:
        """For the given mailboxes (compared without case, as SMTP addresses are), the spelling
        of the tenant's calendar each names; mailboxes the tenant has no calendar for are left
        out."""
        ...

    async def record_sync_error(
        self, tenant_id: str, mailbox: str, *, error: str, at: dt.datetime
    ) -> None: ...

    async def events_in_window(
        self,
        tenant_id: str,
        mailboxes: Sequence[str],
        *,
        start: dt.datetime,
        end: dt.datetime,
    ) -> dict[str, list[BasicEvent]]:
        """Cached events overlapping [start, end) per mailbox, ordered by start."""
        ...

    async def stored_window(
        self, tenant_id: str, mailbox: str, *, start: dt.datetime, end: dt.datetime
    ) -> StoredWindow | None:
        """The calendar's stored window, its delta link, and its cached events overlapping
        [start, end), all as one moment saw them (the link and the events written by the same
        refresh); None when the calendar is unknown."""
        ...

    # --- change feed -------------------------------------------------------------------------
    async def changes_since(self, seq: int, *, limit: int = 1000) -> Sequence[CalendarChange]: ...

    async def last_change_seq(self) -> int: ...

    async def layout_changed_at(self, tenant_id: str) -> dt.datetime:
        """When the tenant's settings or its rooms (linked, replaced, unlinked) last changed:
        what every room's displayed state depends on besides its calendar. ``NotFound`` for an
        unknown tenant."""
        ...

    async def prune_changes(
        self, *, before: dt.datetime, chunk: int = 1000, max_chunks: int = 20
    ) -> int:
        """Drop change-feed rows older than ``before`` (the newest row is always kept), oldest
        first, at most ``max_chunks`` transactions of ``chunk`` rows; how many went."""
        ...

    # --- signals -----------------------------------------------------------------------------
    def add_change_listener(self, callback: ChangeListener) -> None:
        """Call ``callback`` in this process after every commit that appended to the feed, once
        per entry, with the entry's calendar (``ChangedCalendar``: no seq)."""
        ...

    def remove_change_listener(self, callback: ChangeListener) -> None: ...

    def add_rooms_listener(self, callback: RoomsListener) -> None:
        """Call ``callback(tenant_id)`` in this process after every commit that wrote room links
        (put, delete, import) or deleted the tenant."""
        ...

    def remove_rooms_listener(self, callback: RoomsListener) -> None: ...

    def add_tenants_listener(self, callback: TenantsListener) -> None:
        """Call ``callback(tenant_id)`` in this process after every commit that created or
        deleted the tenant, changed its settings, or added, revoked or replaced its secrets."""
        ...

    def remove_tenants_listener(self, callback: TenantsListener) -> None: ...

    def watch_feed(
        self, on_notice: Callable[[], None], *, on_connect: Callable[[], None] | None = None
    ) -> bool:
        """Call ``on_notice()`` soon after another process appends to the change feed, and
        ``on_connect()`` whenever watching (re)starts, when notices may have been missed. True
        where the database announces such writes (PostgreSQL); False elsewhere, where readers
        of the feed must poll."""
        ...

    def unwatch_feed(self, on_notice: Callable[[], None]) -> None: ...
