"""Event source ``connector``: the customer's connector serves the basic events of a window;
the service holds no Graph credentials. Every call is signed with the tenant's secret."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from bookingcache.clock import Clock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState
from bookingcache.errors import Throttled, UpstreamError
from bookingcache.store.port import Store
from bookingcache.sync.sources.http import retry_after_s
from bookingcache.sync.sources.signing import sign_request
from bookingcache.sync.sources.wire import WireWindow, format_utc


class ConnectorSource:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._store = store
        self._clock = clock
        self._http = httpx.AsyncClient(
            transport=transport, timeout=timeout_s, verify=verify, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        tenant = await self._store.get_tenant(calendar.tenant_id)
        if not tenant.connector_url:
            raise UpstreamError(f"tenant {tenant.id!r} has no connector URL")
        secret = await self._store.get_signing_secret(tenant.id)
        base = tenant.connector_url.rstrip("/")
        url = f"{base}/v1/calendars/{quote(calendar.mailbox, safe='@')}/events"
        request = self._http.build_request(
            "GET", url, params={"start": format_utc(start), "end": format_utc(end)}
        )
        sign_request(request, secret=secret, now=self._clock.now())
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"connector timed out for {calendar.mailbox}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"connector unreachable: {exc.__class__.__name__}") from exc
        if response.status_code in (429, 503):
            raise Throttled(
                f"connector answered {response.status_code}",
                retry_after_s=retry_after_s(response, now=self._clock.now()),
            )
        if response.status_code != 200:
            raise UpstreamError(
                f"connector answered {response.status_code} for {calendar.mailbox}: "
                f"{response.text[:300]}"
            )
        try:
            window = WireWindow.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(f"connector sent an unreadable window: {exc}") from exc
        if window.mailbox.casefold() != calendar.mailbox.casefold():
            raise UpstreamError(f"connector answered for {window.mailbox}, not {calendar.mailbox}")
        if window.start > start or window.end < end:
            raise UpstreamError("connector answered a narrower window than asked for")
        return [item.to_event() for item in window.events]
