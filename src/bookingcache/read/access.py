"""Who may read: every tenant's read-token hash held in memory, and tenants' settings kept
briefly for the hot path.

Read tokens are checked in memory, without a database round trip per request: the SHA-256 of
every tenant's read token is read in one query and kept. It is read again

* before the next check after this process created or deleted a tenant or replaced its secrets
  (the store's tenants listener calls ``forget``);
* before the next check once it is ``token_refresh`` old, so a token replaced or a tenant deleted
  by another process stops working within ``token_refresh`` (``read_token_refresh_s``);
* when a token fails and the hashes are older than ``MISS_RECHECK``, so a tenant created or a
  token replaced by another process works within a second. Failing tokens cost at most one such
  read (or attempt, while the database is away: the token is then just refused) per
  ``MISS_RECHECK``, however many arrive, and a token naming an unknown tenant costs the same as
  a wrong token naming a known one.

Tenant settings (title policy, staleness bound, default zone) are re-read at most once per
``ttl``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import secrets

from bookingcache.clock import Clock
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import StoreUnavailable
from bookingcache.store.port import Store

log = logging.getLogger(__name__)

MISS_RECHECK = dt.timedelta(seconds=1)
# Compared against when the claimed tenant is unknown, so that case does the same work as a
# wrong token of a known tenant. No token hashes to it but by a 2^-256 chance.
_NO_TENANT = secrets.token_bytes(32)


def _fresh(at: dt.datetime, now: dt.datetime, ttl: dt.timedelta) -> bool:
    return at <= now < at + ttl


class AccessCache:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        ttl: dt.timedelta,
        token_refresh: dt.timedelta = dt.timedelta(seconds=5),
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._token_refresh = token_refresh
        self._tenants: dict[str, tuple[dt.datetime, Tenant]] = {}
        self._hashes: dict[str, bytes] = {}
        # When the hashes were read; None: read them before the next check.
        self._hashes_read_at: dt.datetime | None = None
        # Counts ``forget`` calls: one heard while the hashes are read makes them due again.
        self._forgotten = 0
        # When a failing token last made the hashes be read again (or tried to).
        self._miss_recheck_at: dt.datetime | None = None
        self._hashes_lock = asyncio.Lock()

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
        """Whether ``token`` is the read token of tenant ``tenant_id`` (False for an unknown
        tenant, after the same work)."""
        await self._reread_if(self._token_refresh)
        presented = hashlib.sha256(token.encode()).digest()
        if self._matches(tenant_id, presented):
            return True
        if await self._recheck_after_miss():
            return self._matches(tenant_id, presented)
        return False

    async def _recheck_after_miss(self) -> bool:
        """Read the hashes again for a failing token (it may be new in another process), at
        most once per ``MISS_RECHECK``, attempts that failed included; True if they were read."""
        now = self._clock.now()
        if self._miss_recheck_at is not None and _fresh(self._miss_recheck_at, now, MISS_RECHECK):
            return False
        self._miss_recheck_at = now
        try:
            return await self._reread_if(MISS_RECHECK)
        except StoreUnavailable as exc:
            log.warning("could not re-read the read-token hashes: %s", exc)
            return False

    def _matches(self, tenant_id: str, presented: bytes) -> bool:
        stored = self._hashes.get(tenant_id)
        same = hmac.compare_digest(presented, _NO_TENANT if stored is None else stored)
        return same and stored is not None

    async def _reread_if(self, older_than: dt.timedelta) -> bool:
        """Read every tenant's hash again if those held are ``older_than`` (or were let go);
        True if they were read."""
        if self._hashes_read_at is not None and _fresh(
            self._hashes_read_at, self._clock.now(), older_than
        ):
            return False
        async with self._hashes_lock:
            started = self._clock.now()
            if self._hashes_read_at is not None and _fresh(
                self._hashes_read_at, started, older_than
            ):
                return False  # read meanwhile by another request
            forgotten = self._forgotten
            hashes = await self._store.read_token_hashes()
            self._hashes = {
                tenant_id: bytes.fromhex(digest) for tenant_id, digest in hashes.items()
            }
            # A write heard meanwhile may have missed this read: the next check reads again.
            self._hashes_read_at = started if forgotten == self._forgotten else None
            return True

    def forget(self, tenant_id: str) -> None:
        """Drop what is kept about the tenant (it changed or went away): its settings, and
        every hash, read again before the next check."""
        self._tenants.pop(tenant_id, None)
        self._hashes.pop(tenant_id, None)
        self._hashes_read_at = None
        self._forgotten += 1
