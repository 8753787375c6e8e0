"""Event source ``connector``: the customer's connector serves the basic events of a window;
the service holds no Graph credentials. Every call is signed with the tenant's secret by the
one connector client (``contract.client``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from bookingcache.contract.client import ConnectorClient
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState
from bookingcache.errors import UpstreamError
from bookingcache.store.port import Store


class ConnectorSource:
    def __init__(self, store: Store, *, client: ConnectorClient) -> None:
        self._store = store
        self._client = client

    def forget(self, tenant_id: str, mailbox: str) -> None:
        """Every read is of the whole window: nothing is kept between reads."""

    def delta_link_of(self, tenant_id: str, mailbox: str) -> str | None:
        return None

    async def aclose(self) -> None:
        """The client belongs to the composition root, which closes it."""

    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        tenant = await self._store.get_tenant(calendar.tenant_id)
        if not tenant.connector_url:
            raise UpstreamError(
                f"tenant {tenant.id!r} has no connector URL", kind="connector-not-configured"
            )
        secrets = await self._store.signing_secrets(tenant.id)
        return await self._client.read_window(
            tenant.connector_url, calendar.mailbox, secrets=secrets, start=start, end=end
        )
