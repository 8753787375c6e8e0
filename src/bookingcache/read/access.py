"""Who may read: the hash of every read token held in memory, and tenants' settings kept
briefly for the hot path.

Read tokens are checked in memory, without a database round trip per request: the SHA-256 of
every read token, with the tenant it belongs to (a tenant may have several, by name), is read in
one query and kept. It is read again

* before the next check after this process created or deleted a tenant, or added, revoked or
  replaced one of its read tokens (the store's tenants listener calls ``forget``);
* before the next check once it is ``token_refresh`` old, so a token replaced or a tenant deleted
  by another process stops working within ``token_refresh`` (``read_token_refresh_s``);
* when a token fails and the hashes are older than ``MISS_RECHECK``, so a tenant created or a
  token replaced by another process works within a second. Failing tokens cost at most one such
  read (or attempt, while the database is away: the token is then just refused) per
  ``MISS_RECHECK``, however many arrive, and a token naming an unknown tenant costs the same as
  a wrong token naming a known one.

When a token was last used is noted in memory and written, one batch for every token used
since, whenever the hashes are read again (so at most every ``token_refresh`` while tokens are
used); a failed write is logged and tried again with the next batch.

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
# Compared against when the token is unknown, so that case does the same work as a known token
# presented for another tenant. No tenant id equals it.
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
        # The read of a tenant's settings in flight, shared by the requests that wait for it.
        self._reading: dict[str, asyncio.Future[Tenant]] = {}
        # The tenant of every read token, by the token's SHA-256.
        self._owners: dict[bytes, str] = {}
        # Tokens used since the last batch was written: when, by the token's SHA-256.
        self._used: dict[bytes, dt.datetime] = {}
        # When the hashes were read; None: read them before the next check.
        self._hashes_read_at: dt.datetime | None = None
        # Counts ``forget`` calls: one heard while the hashes are read makes them due again.
        self._forgotten = 0
        # When a failing token last made the hashes be read again (or tried to).
        self._miss_recheck_at: dt.datetime | None = None
        self._hashes_lock = asyncio.Lock()

    async def tenant(self, tenant_id: str) -> Tenant:
        """The tenant's settings; ``NotFound`` for an unknown tenant.

        Requests that find the settings out of date together share one read: without it,
        every request in flight when they expire would ask the database the same question."""
        cached = self._tenants.get(tenant_id)
        if cached is not None and _fresh(cached[0], self._clock.now(), self._ttl):
            return cached[1]
        reading = self._reading.get(tenant_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_tenant(tenant_id))
            self._reading[tenant_id] = reading
        # Shielded: a request that goes away does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read_tenant(self, tenant_id: str) -> Tenant:
        now = self._clock.now()
        forgotten = self._forgotten
        try:
            tenant = await self._store.get_tenant(tenant_id)
        finally:
            if self._reading.get(tenant_id) is asyncio.current_task():
                del self._reading[tenant_id]
        if forgotten == self._forgotten:  # else: it may predate the change; read again next
            self._tenants[tenant_id] = (now, tenant)
        return tenant

    async def read_token_valid(self, tenant_id: str, token: str) -> bool:
        """Whether ``token`` is the read token of tenant ``tenant_id`` (False for an unknown
        tenant, after the same work)."""
        await self._reread_if(self._token_refresh)
        presented = hashlib.sha256(token.encode()).digest()
        if self._matches(tenant_id, presented) or (
            await self._recheck_after_miss() and self._matches(tenant_id, presented)
        ):
            self._used[presented] = self._clock.now()
            return True
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
        # A dictionary probe by the SHA-256 of the presented token: its timing could tell only
        # about that hash, which the caller already knows. The owner is then compared in
        # constant time, the same work whether the token is known or not.
        owner = self._owners.get(presented)
        same = hmac.compare_digest(
            tenant_id.encode(), _NO_TENANT if owner is None else owner.encode()
        )
        return same and owner is not None

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
            await self._write_uses()
            owners = await self._store.read_token_owners()
            self._owners = {bytes.fromhex(digest): tenant for digest, tenant in owners.items()}
            # A write heard meanwhile may have missed this read: the next check reads again.
            self._hashes_read_at = started if forgotten == self._forgotten else None
            return True

    async def _write_uses(self) -> None:
        """Write when the tokens used since the last batch were used (see the module)."""
        if not self._used:
            return
        batch, self._used = self._used, {}
        try:
            await self._store.note_read_tokens_used(
                {digest.hex(): at for digest, at in batch.items()}
            )
        except StoreUnavailable as exc:
            log.warning("could not record when read tokens were last used: %s", exc)
            for digest, at in batch.items():
                self._used[digest] = max(at, self._used.get(digest, at))

    async def flush(self) -> None:
        """Write the pending last-used instants now (when the process stops)."""
        async with self._hashes_lock:
            await self._write_uses()

    def forget(self, tenant_id: str) -> None:
        """Drop what is kept about the tenant (it changed or went away): its settings, and
        every token's owner (a revoked token must stop working here at once), read again
        before the next check."""
        self._tenants.pop(tenant_id, None)
        self._reading.pop(tenant_id, None)  # a read in flight may predate the change
        self._owners = {
            digest: owner for digest, owner in self._owners.items() if owner != tenant_id
        }
        self._hashes_read_at = None
        self._forgotten += 1
