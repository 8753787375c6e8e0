"""Event source ``graph``: the service's own app reads the room calendar from Microsoft Graph.

Each tenant's access (its directory, its own app's client id and sealed credential, or the
service's shared app, and the permission) is set through the admin API and read from the store,
again every ``access_refresh_s``: a changed access (a new secret, another app) gets a new MSAL
app at once, in every process.

- With ``Calendars.Read``: ``calendarView/delta``. The first round pages to the deltaLink; later
  rounds apply changes and ``@removed`` entries to the window state kept with the token, so the
  caller always receives the full window. The token is kept only after a whole round succeeded;
  a 410 (``SyncStateNotFound``) or a token of another window starts a fresh round, which is a
  full read. The worker stores the round's link (``delta_link_of``) with the window's events in
  the ``replace_window`` transaction; a process that has no state for a calendar in memory (a
  restart, another worker) continues from the stored link with the stored events as the base,
  both read in one snapshot.
- With only ``Calendars.ReadBasic.All``: plain ``calendarView`` with ``$select`` of the basic
  fields.

Every request carries ``Prefer: outlook.timezone="UTC"``, follows every nextLink, and holds a
per-mailbox semaphore shared by all refreshes of the process (Graph allows 4 concurrent requests
per app and mailbox). 429/503 raise ``Throttled`` with the ``Retry-After`` seconds; the worker
defers the job by that much, which is the one backoff path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bookingcache.clock import Clock
from bookingcache.contract.aiohttp_transport import AiohttpTransport
from bookingcache.contract.http import retry_after_s, schema_problems
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState, GraphAccess
from bookingcache.errors import Throttled, UpstreamError
from bookingcache.settings import GraphSettings
from bookingcache.store.port import Store
from bookingcache.sync.sources import overlaps
from bookingcache.sync.sources.graph_auth import TokenProvider
from bookingcache.sync.sources.graph_events import parse_graph_event

BASIC_SELECT = "id,subject,start,end,isAllDay,showAs,isCancelled,type,seriesMasterId,sensitivity"


class SyncStateGone(UpstreamError):
    """The delta token is no longer usable (410 SyncStateNotFound, or refused as invalid)."""

    default_kind = "graph-error"


_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def graph_code(response: httpx.Response) -> str:
    """`` (ErrorCode)`` from a Graph error answer's ``error.code``, or nothing: the code says
    what went wrong; the message beside it may quote anything, so it stays out of the log."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return f" ({code})"
    return ""


class GraphPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: list[dict[str, Any]]
    next_link: str | None = Field(default=None, alias="@odata.nextLink")
    delta_link: str | None = Field(default=None, alias="@odata.deltaLink")


@dataclass(slots=True)
class DeltaState:
    start: dt.datetime
    end: dt.datetime
    delta_link: str
    events: dict[str, BasicEvent]


@dataclass(slots=True)
class _Access:
    access: GraphAccess
    provider: TokenProvider
    read_at: float  # monotonic


class MailboxLimiter:
    """One semaphore per (directory, mailbox) for the whole process."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._semaphores: dict[tuple[str, str], asyncio.Semaphore] = {}

    def __call__(self, directory: str, mailbox: str) -> asyncio.Semaphore:
        key = (directory.casefold(), mailbox.casefold())
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = asyncio.Semaphore(self._limit)
        return semaphore


class GraphSource:
    def __init__(
        self,
        settings: GraphSettings,
        *,
        clock: Clock,
        store: Store,
        transport: httpx.AsyncBaseTransport | None = None,
        access_refresh_s: float = 2.0,
    ) -> None:
        self._settings = settings
        self._clock = clock
        # Where each tenant's access is read from, and a stored delta link with its events.
        self._store = store
        self._access_refresh_s = access_refresh_s
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle:
            verify = ssl.create_default_context(cafile=settings.ca_bundle)
        # trust_env=False: proxies and CA bundles come from settings, not the host environment.
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(verify=verify),
            timeout=settings.request_timeout_s,
            verify=verify,
            trust_env=False,
            follow_redirects=False,
        )
        self._limiter = MailboxLimiter(settings.max_concurrent_per_mailbox)
        self._access: dict[str, _Access] = {}
        self._access_locks: dict[str, asyncio.Lock] = {}
        # A calendar's delta state; None: forgotten, the next read is a fresh round whatever
        # is stored; absent: not known to this process, the stored link may be continued.
        self._delta: dict[tuple[str, str], DeltaState | None] = {}
        origin = urlsplit(settings.graph_base_url)
        self._origin = (origin.scheme, origin.netloc.casefold())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _provider(self, tenant_id: str) -> _Access:
        """The tenant's access as stored (read again every ``access_refresh_s``) with a token
        provider built from it; a changed access (its revision counts every change of the
        credentials) gets a new provider, so a new secret is used at once."""
        entry = self._access.get(tenant_id)
        if entry is not None and time.monotonic() - entry.read_at < self._access_refresh_s:
            return entry
        lock = self._access_locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            entry = self._access.get(tenant_id)
            now = time.monotonic()
            if entry is not None and now - entry.read_at < self._access_refresh_s:
                return entry
            access = (await self._store.get_tenant(tenant_id)).graph
            if access is None:
                self._access.pop(tenant_id, None)
                raise UpstreamError(
                    f"tenant {tenant_id!r} has no Graph access configured",
                    kind="graph-not-configured",
                )
            if entry is not None and entry.access == access:
                entry.read_at = now
                return entry
            if entry is not None and (entry.access.directory_tenant, entry.access.client_id) != (
                access.directory_tenant,
                access.client_id,
            ):
                self._forget_tenant(tenant_id)  # delta links of another app or directory
            entry = self._access[tenant_id] = _Access(
                access, await self._token_provider(tenant_id, access), now
            )
            return entry

    async def _token_provider(self, tenant_id: str, access: GraphAccess) -> TokenProvider:
        credential: str | dict[str, str]
        if access.client_id is None:
            client_id = self._settings.client_id
            credential = self._settings.client_secret.get_secret_value()
        else:
            client_id = access.client_id
            stored = await self._store.graph_credential(tenant_id)
            if stored is None:
                credential = ""
            elif stored.client_secret is not None:
                credential = stored.client_secret
            else:
                credential = {
                    "private_key": stored.private_key or "",
                    "thumbprint": stored.thumbprint or "",
                }
        if not client_id or not credential:
            raise UpstreamError(
                f"tenant {tenant_id!r}: Graph client id or credential missing",
                kind="graph-not-configured",
            )
        return TokenProvider(
            authority_host=self._settings.authority_host,
            directory_tenant=access.directory_tenant,
            client_id=client_id,
            credential=credential,
            scope=self._settings.scope,
            http=self._http,
            timeout_s=self._settings.request_timeout_s,
        )

    def _forget_tenant(self, tenant_id: str) -> None:
        for key in [key for key in self._delta if key[0] == tenant_id]:
            self._delta[key] = None

    async def read_window(
        self, calendar: CalendarState, *, start: dt.datetime, end: dt.datetime
    ) -> Sequence[BasicEvent] | None:
        entry = await self._provider(calendar.tenant_id)
        provider, directory = entry.provider, entry.access.directory_tenant
        permission = entry.access.permission or self._settings.permission
        semaphore = self._limiter(directory, calendar.mailbox)
        if permission == "read_basic":
            events = await self._calendar_view(provider, semaphore, calendar.mailbox, start, end)
        else:
            events = await self._delta_read(provider, semaphore, calendar, start, end)
        return [event for event in events if overlaps(event, start, end)]

    def forget(self, tenant_id: str, mailbox: str) -> None:
        """Drop the delta state of a calendar so the next read is a full round (the stored
        link included)."""
        self._delta[(tenant_id, mailbox.casefold())] = None

    def delta_link_of(self, tenant_id: str, mailbox: str) -> str | None:
        """The delta link that goes with the last window read of the calendar (None when it
        was not a delta read); stored with the events by the refresh."""
        state = self._delta.get((tenant_id, mailbox.casefold()))
        return None if state is None else state.delta_link

    async def _stored_state(
        self, calendar: CalendarState, start: dt.datetime, end: dt.datetime
    ) -> DeltaState | None:
        """The delta link stored with the calendar's cached window and those events, when the
        link belongs to this window. Both come from one snapshot, as the refresh that wrote
        them left them: a link older than the events would lose an event created and
        cancelled between the two, which the next round from that link never mentions."""
        # A day of slack each side: all-day events are placed in the room's zone by the store's
        # window rule; the exact rule of this source is applied here.
        slack = dt.timedelta(days=1)
        stored = await self._store.stored_window(
            calendar.tenant_id, calendar.mailbox, start=start - slack, end=end + slack
        )
        if stored is None or not stored.delta_link:
            return None
        if (stored.window_start, stored.window_end) != (start, end):
            return None
        events = {event.id: event for event in stored.events if overlaps(event, start, end)}
        return DeltaState(start, end, stored.delta_link, events)

    # --- reads -------------------------------------------------------------------------------
    def _users_url(self, mailbox: str) -> str:
        return f"{self._settings.graph_base_url.rstrip('/')}/users/{quote(mailbox, safe='@')}"

    @staticmethod
    def _window_params(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
        return {
            "startDateTime": start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": end.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    async def _calendar_view(
        self,
        provider: TokenProvider,
        semaphore: asyncio.Semaphore,
        mailbox: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> list[BasicEvent]:
        params = self._window_params(start, end) | {
            "$select": BASIC_SELECT,
            "$top": str(self._settings.page_size),
        }
        url: str | None = str(
            httpx.URL(f"{self._users_url(mailbox)}/calendar/calendarView", params=params)
        )
        events: dict[str, BasicEvent] = {}
        while url is not None:
            page = await self._get(provider, semaphore, url, delta=False)
            for raw in page.value:
                event = parse_graph_event(raw)
                if event is not None:
                    events[event.id] = event
            url = page.next_link
        return list(events.values())

    async def _delta_read(
        self,
        provider: TokenProvider,
        semaphore: asyncio.Semaphore,
        calendar: CalendarState,
        start: dt.datetime,
        end: dt.datetime,
    ) -> list[BasicEvent]:
        key = (calendar.tenant_id, calendar.mailbox.casefold())
        if key in self._delta:
            state = self._delta[key]
        else:
            state = await self._stored_state(calendar, start, end)
        if state is not None and (state.start, state.end) == (start, end):
            try:
                events, link, series_changed = await self._delta_round(
                    provider, semaphore, state.delta_link, dict(state.events)
                )
            except SyncStateGone:
                self._delta[key] = None
            else:
                if not series_changed:
                    self._delta[key] = DeltaState(start, end, link, events)
                    return list(events.values())
                # A series master arrived changed: Graph does not report an occurrence that was
                # cancelled in a series as removed, it sends the master instead, so which of the
                # occurrences held are gone is unknowable from the round. A fresh round reads
                # the window whole.
        # No token, a token of another window, or an expired one: a fresh round is a full read.
        self._delta[key] = None
        first = str(
            httpx.URL(
                f"{self._users_url(calendar.mailbox)}/calendarView/delta",
                params=self._window_params(start, end),
            )
        )
        try:
            events, link, _ = await self._delta_round(provider, semaphore, first, {})
        except SyncStateGone as exc:
            raise UpstreamError(
                f"Graph refused a fresh delta round: {exc}", kind="graph-error", status=exc.status
            ) from exc
        self._delta[key] = DeltaState(start, end, link, events)
        return list(events.values())

    async def _delta_round(
        self,
        provider: TokenProvider,
        semaphore: asyncio.Semaphore,
        url: str,
        events: dict[str, BasicEvent],
    ) -> tuple[dict[str, BasicEvent], str, bool]:
        """The round's events applied to ``events``, its delta link, and whether a series
        master was among its items."""
        series_changed = False
        next_url: str | None = url
        while next_url is not None:
            page = await self._get(provider, semaphore, next_url, delta=True)
            for raw in page.value:
                item_id = raw.get("id")
                if not isinstance(item_id, str) or not item_id:
                    raise UpstreamError(
                        "Graph sent a delta item without an id", kind="graph-bad-answer"
                    )
                if "@removed" in raw:
                    events.pop(item_id, None)
                    continue
                series_changed = series_changed or raw.get("type") == "seriesMaster"
                event = parse_graph_event(raw)
                if event is None:
                    events.pop(item_id, None)
                else:
                    events[item_id] = event
            if page.delta_link is not None:
                return events, page.delta_link, series_changed
            next_url = page.next_link
        raise UpstreamError(
            "Graph ended a delta round without a deltaLink", kind="graph-bad-answer"
        )

    # --- one request -------------------------------------------------------------------------
    def _check_origin(self, url: str) -> None:
        # Links from Graph carry our bearer token: never follow one to another host.
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.casefold()) != self._origin:
            raise UpstreamError(
                f"Graph sent a link to another origin: {parts.netloc}", kind="graph-bad-answer"
            )

    async def _get(
        self, provider: TokenProvider, semaphore: asyncio.Semaphore, url: str, *, delta: bool
    ) -> GraphPage:
        self._check_origin(url)
        prefer = 'outlook.timezone="UTC"'
        if delta:
            prefer += f", odata.maxpagesize={self._settings.page_size}"
        for attempt in range(2):
            token = await provider.token()
            headers = {"Authorization": f"Bearer {token}", "Prefer": prefer}
            async with semaphore:
                try:
                    response = await self._http.get(url, headers=headers)
                except httpx.TimeoutException as exc:
                    raise UpstreamError("Graph request timed out", kind="graph-timeout") from exc
                except httpx.HTTPError as exc:
                    raise UpstreamError(
                        f"Graph unreachable: {exc.__class__.__name__}", kind="graph-unreachable"
                    ) from exc
            if response.status_code == 401 and attempt == 0:
                # A token Graph no longer accepts (revoked, expired early): get a fresh one once.
                await provider.discard()
                continue
            return self._page(response, delta=delta)
        raise UpstreamError(
            "Graph refused a fresh token (401)", kind="graph-refused-auth", status=401
        )

    def _page(self, response: httpx.Response, *, delta: bool) -> GraphPage:
        status = response.status_code
        if status in (429, 503):
            raise Throttled(
                f"Graph answered {status}",
                retry_after_s=retry_after_s(response, now=self._clock.now()),
                kind="graph-throttled",
                status=status,
            )
        if delta and status in (400, 404, 410):
            raise SyncStateGone(
                f"delta token refused ({status}){graph_code(response)}", status=status
            )
        if status != 200:
            kind = "graph-refused-auth" if status in (401, 403) else "graph-error"
            raise UpstreamError(
                f"Graph answered {status}{graph_code(response)}", kind=kind, status=status
            )
        try:
            return GraphPage.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(
                f"Graph sent an unreadable page: {schema_problems(exc)}", kind="graph-bad-answer"
            ) from exc
