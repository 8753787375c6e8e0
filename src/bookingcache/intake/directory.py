"""What intake needs to know on every notification, kept in memory so a busy webhook does not
read the database per request: which tenant and calendar a subscription belongs to, and the
tenant's valid clientState secrets.

- A known subscription is remembered for ``owner_ttl_s`` (a subscription never changes owner;
  a deleted one answering a little longer costs at most one refresh). An unknown id is looked
  up every time, so a subscription created a moment ago by another process is never missed.
- A tenant's secrets are remembered for ``states_ttl_s``; a clientState that matches none of
  them triggers one fresh read before it is refused (a rotation just happened elsewhere), at
  most once per ``recheck_s`` per tenant so wrong secrets cannot turn into a database load.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from bookingcache.clock import Clock
from bookingcache.store.subscriptions import SubscriptionOwner, Subscriptions

_MAX_OWNERS = 200_000
# Secrets are looked up for the tenant named in a webhook URL, which anyone can make up: the
# memory of them is bounded.
_MAX_TENANTS = 20_000


class IntakeDirectory:
    def __init__(
        self,
        registry: Subscriptions,
        *,
        clock: Clock,
        owner_ttl_s: float = 300.0,
        states_ttl_s: float = 30.0,
        recheck_s: float = 1.0,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._owner_ttl = dt.timedelta(seconds=owner_ttl_s)
        self._states_ttl = dt.timedelta(seconds=states_ttl_s)
        self._recheck = dt.timedelta(seconds=recheck_s)
        self._owners: dict[str, tuple[SubscriptionOwner, dt.datetime]] = {}
        self._states: dict[str, tuple[list[str], dt.datetime]] = {}

    async def owners(self, subscription_ids: Collection[str]) -> dict[str, SubscriptionOwner]:
        now = self._clock.now()
        found: dict[str, SubscriptionOwner] = {}
        missing: list[str] = []
        for subscription_id in subscription_ids:
            cached = self._owners.get(subscription_id)
            if cached is not None and now - cached[1] < self._owner_ttl:
                found[subscription_id] = cached[0]
            else:
                missing.append(subscription_id)
        if missing:
            fetched = await self._registry.lookup(missing)
            if len(self._owners) + len(fetched) > _MAX_OWNERS:
                self._owners.clear()
            for subscription_id, owner in fetched.items():
                self._owners[subscription_id] = (owner, now)
            found.update(fetched)
        return found

    async def client_states(self, tenant_id: str, *, fresh: bool = False) -> list[str]:
        """The tenant's valid secrets; ``fresh`` asks for a database read unless one happened
        within ``recheck_s``."""
        now = self._clock.now()
        cached = self._states.get(tenant_id)
        if cached is not None:
            age = now - cached[1]
            if age < (self._recheck if fresh else self._states_ttl):
                return cached[0]
        states = await self._registry.client_states(tenant_id)
        if tenant_id not in self._states and len(self._states) >= _MAX_TENANTS:
            self._states.clear()
        self._states[tenant_id] = (states, now)
        return states

    def forget(self) -> None:
        """Drop everything remembered (after this process changed subscriptions or secrets)."""
        self._owners.clear()
        self._states.clear()
