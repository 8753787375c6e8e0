"""What a refresh needs to know about its tenant and calendar, read in bulk and kept briefly.

Every refresh needs the tenant's event source and the room's time zone. Reading both per
refresh costs two database round trips each time; instead the tenant and all its calendars are
read in one go and reused for ``ttl_s``. A change of event source or time zone, made through
the admin API in any process, therefore takes effect within ``ttl_s`` (5 seconds); a calendar
not (yet) in the cached list is read on its own, and a vanished tenant or calendar still
surfaces as ``NotFound`` from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bookingcache.domain.tenancy import CalendarState, Tenant
from bookingcache.store.port import Store


@dataclass(slots=True)
class _Entry:
    tenant: Tenant
    calendars: dict[str, CalendarState]
    read_at: float


class SyncDirectory:
    def __init__(self, store: Store, *, ttl_s: float = 5.0) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def lookup(self, tenant_id: str, mailbox: str) -> tuple[Tenant, CalendarState]:
        entry = await self._entry(tenant_id)
        calendar = entry.calendars.get(mailbox)
        if calendar is None:
            calendar = await self._store.get_calendar(tenant_id, mailbox)
            entry.calendars[mailbox] = calendar
        return entry.tenant, calendar

    async def _entry(self, tenant_id: str) -> _Entry:
        entry = self._entries.get(tenant_id)
        if entry is not None and time.monotonic() - entry.read_at < self._ttl_s:
            return entry
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            entry = self._entries.get(tenant_id)
            if entry is not None and time.monotonic() - entry.read_at < self._ttl_s:
                return entry
            tenant = await self._store.get_tenant(tenant_id)
            calendars = await self._store.list_calendars(tenant_id)
            entry = _Entry(tenant, {c.mailbox: c for c in calendars}, time.monotonic())
            self._entries[tenant_id] = entry
            return entry

    def forget(self, tenant_id: str) -> None:
        self._entries.pop(tenant_id, None)
