"""Who may read: tenants' settings and confirmed read tokens, kept briefly for the hot path.

A confirmed read token is trusted for ``ttl`` without asking the store again, so a replaced token
stops working within it; a refused token is asked about every time. Tenant settings (title
policy, staleness bound, default zone) are re-read at most once per ``ttl``.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from bookingcache.clock import Clock
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import NotFound
from bookingcache.store.port import Store

_MAX_CONFIRMED_TOKENS = 10_000


def _fresh(at: dt.datetime, now: dt.datetime, ttl: dt.timedelta) -> bool:
    return at <= now < at + ttl


class AccessCache:
    def __init__(self, store: Store, clock: Clock, *, ttl: dt.timedelta) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._tenants: dict[str, tuple[dt.datetime, Tenant]] = {}
        self._tokens: dict[tuple[str, bytes], dt.datetime] = {}

    async def tenant(self, tenant_id: str) -> Tenant:
        """The tenant's settings; ``NotFound`` for an unknown tenant."""
        now = self._clock.now()
        cached = self._tenants.get(tenant_id)
        if cached is not None and _fresh(cached[0], now, self._ttl):
            return cached[1]
        tenant = await self._store.get_tenant(tenant_id)
        self._tenants[tenant_id] = (now, tenant)
        return tenant

    async def read_token_valid(self, tenant_id: str, token: str) -> bool:
        """Whether ``token`` is the tenant's read token."""
        now = self._clock.now()
        key = (tenant_id, hashlib.sha256(token.encode()).digest())
        confirmed = self._tokens.get(key)
        if confirmed is not None and _fresh(confirmed, now, self._ttl):
            return True
        try:
            valid = await self._store.check_read_token(tenant_id, token)
        except NotFound:
            valid = False
        if valid:
            if len(self._tokens) >= _MAX_CONFIRMED_TOKENS:
                self._tokens.clear()
            self._tokens[key] = now
        else:
            self._tokens.pop(key, None)
        return valid

    def forget(self, tenant_id: str) -> None:
        """Drop what is kept about the tenant (it changed or went away)."""
        self._tenants.pop(tenant_id, None)
        for key in [key for key in self._tokens if key[0] == tenant_id]:
            del self._tokens[key]
