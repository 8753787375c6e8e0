"""The Graph calls the connector makes, with Graph's throttling rules built in.

* at most ``per_mailbox_concurrency`` (4) requests in flight per mailbox (Outlook's limit is per
  app and mailbox, so one busy room never blocks another);
* ``429``/``503`` wait for ``Retry-After`` (seconds), otherwise back off exponentially;
* bounded retries, then the error is raised as :class:`GraphError`;
* a ``401 InvalidAuthenticationToken`` (a token revoked, or refused before its expiry) drops
  that token from MSAL's cache and the request is sent once more with a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from .auth import TokenProvider
from .clock import Clock, to_graph_utc
from .errors import GraphError
from .events import SELECT
from .metrics import Metrics
from .ratelimit import SlidingWindow

RETRY_STATUSES = {429, 503, 504}
UTC_PREFERENCE = 'outlook.timezone="UTC"'
NO_MAILBOX = ""


class GraphClient:
    def __init__(
        self,
        *,
        base_url: str,
        tokens: TokenProvider,
        http: httpx.AsyncClient,
        clock: Clock,
        per_mailbox_concurrency: int = 4,
        max_retries: int = 5,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._metrics = metrics or Metrics()
        self._tokens = tokens
        self._http = http
        self._clock = clock
        self._max_retries = max_retries
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._limits: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(per_mailbox_concurrency)
        )

    @property
    def base_url(self) -> str:
        return self._base

    async def request(
        self,
        method: str,
        url: str,
        *,
        mailbox: str = NO_MAILBOX,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        quota: SlidingWindow | None = None,
    ) -> httpx.Response:
        """One Graph call; ``url`` is a path below the base URL or a full ``@odata.nextLink``.
        ``quota``: a limit of Graph's that every attempt counts against, retries included."""
        target = url if url.startswith(("https://", "http://")) else f"{self._base}{url}"
        attempt = 0
        refreshed = False
        while True:
            token = await self._tokens.token()
            send_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            send_headers.update(headers or {})
            content = None
            if json_body is not None:
                content = json.dumps(json_body).encode()
                send_headers["Content-Type"] = "application/json"
            async with contextlib.AsyncExitStack() as held:
                if quota is not None:
                    await held.enter_async_context(quota.slot())
                await held.enter_async_context(self._limits[mailbox.lower()])
                try:
                    response = await self._http.request(
                        method, target, params=params, headers=send_headers, content=content
                    )
                except httpx.TransportError as exc:
                    self._metrics.inc("graph_requests", "unreachable")
                    if attempt >= self._max_retries:
                        raise GraphError(0, "Unreachable", f"{method} {target}: {exc}") from exc
                    response = None
            if response is not None:
                self._count(response)
            if response is not None and response.status_code < 400:
                return response
            if (
                response is not None
                and response.status_code == 401
                and not refreshed
                and graph_error(response).code == "InvalidAuthenticationToken"
            ):
                # Graph refused a token MSAL still holds as valid: without this, MSAL would
                # hand out the same token until it nears its expiry.
                refreshed = True
                self._tokens.invalidate(token)
                continue
            if response is not None and (
                response.status_code not in RETRY_STATUSES or attempt >= self._max_retries
            ):
                raise graph_error(response)
            await self._clock.sleep(self._delay(response, attempt))
            attempt += 1

    def _count(self, response: httpx.Response) -> None:
        status = response.status_code
        outcome = "success" if status < 400 else "client_error" if status < 500 else "server_error"
        self._metrics.inc("graph_requests", outcome)
        if status in (429, 503) and "Retry-After" in response.headers:
            self._metrics.inc("graph_throttled", str(status))

    def _delay(self, response: httpx.Response | None, attempt: int) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.strip().isdigit():
                return float(retry_after.strip())
        return min(30.0, 2.0**attempt) * (0.5 + self._rng.random() / 2)

    # -- subscriptions ----------------------------------------------------------------------

    async def list_subscriptions(
        self, *, quota: SlidingWindow | None = None
    ) -> list[dict[str, Any]]:
        """Every subscription this app owns, across ``@odata.nextLink`` pages (each page a
        request against ``quota``)."""
        items: list[dict[str, Any]] = []
        url: str | None = "/subscriptions"
        while url:
            page = (await self.request("GET", url, quota=quota)).json()
            items.extend(x for x in page.get("value", []) if isinstance(x, dict))
            url = page.get("@odata.nextLink")
        return items

    async def create_subscription(
        self, body: dict[str, Any], *, mailbox: str, quota: SlidingWindow | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = (
            await self.request(
                "POST", "/subscriptions", mailbox=mailbox, json_body=body, quota=quota
            )
        ).json()
        return data

    async def update_subscription(
        self,
        subscription_id: str,
        body: dict[str, Any],
        *,
        mailbox: str,
        quota: SlidingWindow | None = None,
    ) -> dict[str, Any]:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        data: dict[str, Any] = (
            await self.request("PATCH", path, mailbox=mailbox, json_body=body, quota=quota)
        ).json()
        return data

    async def delete_subscription(
        self, subscription_id: str, *, mailbox: str, quota: SlidingWindow | None = None
    ) -> None:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        await self.request("DELETE", path, mailbox=mailbox, quota=quota)

    # -- calendar ---------------------------------------------------------------------------

    async def calendar_view(
        self, mailbox: str, start: datetime, end: datetime, *, top: int = 1000
    ) -> list[dict[str, Any]]:
        """The window with recurrences expanded, basic fields only, every page followed."""
        url: str | None = f"/users/{quote(mailbox, safe='@')}/calendar/calendarView"
        params: Mapping[str, str] | None = {
            "startDateTime": to_graph_utc(start),
            "endDateTime": to_graph_utc(end),
            "$select": SELECT,
            "$top": str(top),
        }
        headers = {"Prefer": UTC_PREFERENCE}
        events: list[dict[str, Any]] = []
        while url:
            page = (
                await self.request("GET", url, mailbox=mailbox, params=params, headers=headers)
            ).json()
            events.extend(x for x in page.get("value", []) if isinstance(x, dict))
            url = page.get("@odata.nextLink")
            params = None  # a nextLink is opaque and already carries every parameter
        return events


def graph_error(response: httpx.Response) -> GraphError:
    code, message = "Unknown", response.reason_phrase
    try:
        error = response.json().get("error", {})
        code = str(error.get("code", code))
        message = str(error.get("message", message))
    except (ValueError, AttributeError):
        pass
    return GraphError(response.status_code, code, message)
