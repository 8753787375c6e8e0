"""Which Graph subscription belongs to which tenant and room calendar, and the ``clientState``
secrets a tenant's subscriptions carry, over the ``subscriptions`` and ``client_states`` tables.

One row per calendar holds its current subscription id. A tenant has one current clientState;
rotating it retires the previous one after a grace period, during which both verify, so
notifications already queued at Graph under the old secret are still accepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bookingcache.clock import Clock
from bookingcache.errors import InvalidInput, NotFound
from bookingcache.store.schema import MAILBOX, calendars, client_states, subscriptions, tenants
from bookingcache.store.sql import SqlStore

ACTIVE = "active"
MAX_SUBSCRIPTION_ID = 200
MAX_CLIENT_STATE = 128  # Graph's limit on clientState
_LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class SubscriptionOwner:
    """The calendar a subscription notifies about."""

    tenant_id: str
    mailbox: str


class SubscriptionRegistry:
    def __init__(self, store: SqlStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def _upsert(self) -> Any:
        if self._store.dialect == "postgresql":
            return postgresql.insert(subscriptions)
        return sqlite.insert(subscriptions)

    # --- subscriptions -----------------------------------------------------------------------
    async def record(
        self,
        tenant_id: str,
        mailbox: str,
        subscription_id: str,
        *,
        expires_at: dt.datetime | None,
        status: str = ACTIVE,
    ) -> None:
        """Remember that ``subscription_id`` notifies about ``mailbox`` of ``tenant_id``
        (replacing the calendar's previous subscription). ``NotFound`` when no room of the
        tenant links that calendar."""
        if not subscription_id or len(subscription_id) > MAX_SUBSCRIPTION_ID:
            raise InvalidInput(f"subscription ids must be 1 to {MAX_SUBSCRIPTION_ID} characters")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at must be an aware datetime")
        if len(mailbox) > MAILBOX:
            raise InvalidInput(f"mailboxes are at most {MAILBOX} characters")
        now = self._clock.now()
        values = {
            "subscription_id": subscription_id,
            "expires_at": expires_at,
            "status": status,
            "error": None,
            "needs_action": "none",
            "updated_at": now,
        }
        async with self._store.write() as connection:
            known = await connection.scalar(
                sa.select(calendars.c.mailbox).where(
                    calendars.c.tenant_id == tenant_id, calendars.c.mailbox == mailbox
                )
            )
            if known is None:
                raise NotFound(f"no room of tenant {tenant_id!r} is linked to {mailbox!r}")
            statement = self._upsert().values(tenant_id=tenant_id, mailbox=mailbox, **values)
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["tenant_id", "mailbox"], set_=values
                )
            )

    async def lookup(self, subscription_ids: Collection[str]) -> dict[str, SubscriptionOwner]:
        """The owners of those of ``subscription_ids`` the service knows."""
        wanted = sorted({s for s in subscription_ids if 0 < len(s) <= MAX_SUBSCRIPTION_ID})
        found: dict[str, SubscriptionOwner] = {}
        if not wanted:
            return found
        async with self._store.read() as connection:
            for offset in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[offset : offset + _LOOKUP_CHUNK]
                rows = await connection.execute(
                    sa.select(
                        subscriptions.c.subscription_id,
                        subscriptions.c.tenant_id,
                        subscriptions.c.mailbox,
                    ).where(subscriptions.c.subscription_id.in_(chunk))
                )
                for row in rows:
                    found[row.subscription_id] = SubscriptionOwner(row.tenant_id, row.mailbox)
        return found

    async def needs_action(self, tenant_id: str) -> dict[str, str]:
        """Mailbox → ``renew`` / ``recreate`` for the tenant's subscriptions that need it."""
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.mailbox, subscriptions.c.needs_action).where(
                    subscriptions.c.tenant_id == tenant_id,
                    subscriptions.c.needs_action != "none",
                )
            )
            return {row.mailbox: row.needs_action for row in rows}

    # --- clientState secrets -------------------------------------------------------------------
    async def rotate_client_state(
        self, tenant_id: str, secret: str, *, grace: dt.timedelta = dt.timedelta(hours=4)
    ) -> None:
        """Make ``secret`` the tenant's current clientState. Secrets in use so far stay valid
        for ``grace`` (Graph retries a delivery for up to 4 hours)."""
        if not secret or len(secret) > MAX_CLIENT_STATE:
            raise InvalidInput(f"a clientState must be 1 to {MAX_CLIENT_STATE} characters")
        now = self._clock.now()
        async with self._store.write() as connection:
            exists = await connection.scalar(
                sa.select(tenants.c.id).where(tenants.c.id == tenant_id)
            )
            if exists is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            await connection.execute(
                sa.update(client_states)
                .where(client_states.c.tenant_id == tenant_id, client_states.c.retired_at.is_(None))
                .values(retired_at=now + grace)
            )
            await connection.execute(
                sa.insert(client_states).values(
                    tenant_id=tenant_id, secret=secret, created_at=now, retired_at=None
                )
            )

    async def client_states(self, tenant_id: str) -> list[str]:
        """The clientState secrets that verify for the tenant now, newest first."""
        return (await self.client_states_of([tenant_id])).get(tenant_id, [])

    async def client_states_of(self, tenant_ids: Sequence[str]) -> dict[str, list[str]]:
        if not tenant_ids:
            return {}
        now = self._clock.now()
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(client_states.c.tenant_id, client_states.c.secret)
                .where(
                    client_states.c.tenant_id.in_(sorted(set(tenant_ids))),
                    sa.or_(client_states.c.retired_at.is_(None), client_states.c.retired_at > now),
                )
                .order_by(client_states.c.id.desc())
            )
            result: dict[str, list[str]] = {}
            for row in rows:
                result.setdefault(row.tenant_id, []).append(row.secret)
            return result

    async def current_client_state(self, tenant_id: str) -> str | None:
        async with self._store.read() as connection:
            secret = await connection.scalar(
                sa.select(client_states.c.secret)
                .where(client_states.c.tenant_id == tenant_id, client_states.c.retired_at.is_(None))
                .order_by(client_states.c.id.desc())
                .limit(1)
            )
        return None if secret is None else str(secret)

    # --- calendars -----------------------------------------------------------------------------
    async def calendars_of(self, tenant_id: str, mailboxes: Collection[str]) -> dict[str, str]:
        """For the given mailboxes (compared without case, as SMTP addresses are), the spelling
        of the tenant's calendar each names; mailboxes the tenant has no calendar for are left
        out."""
        folded = {m.casefold() for m in mailboxes if 0 < len(m) <= MAILBOX}
        found: dict[str, str] = {}
        if not folded:
            return found
        wanted = sorted(folded)
        async with self._store.read() as connection:
            for offset in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[offset : offset + _LOOKUP_CHUNK]
                rows = await connection.execute(
                    sa.select(calendars.c.mailbox).where(
                        calendars.c.tenant_id == tenant_id,
                        sa.func.lower(calendars.c.mailbox).in_(chunk),
                    )
                )
                for row in rows:
                    found[row.mailbox.casefold()] = row.mailbox
        return {m: found[m.casefold()] for m in mailboxes if m.casefold() in found}
