"""The service's client of the customer's connector (connector/openapi.yaml): every call signed
with the tenant's secret, every failure mapped the same way. It serves the subscription
orchestration (``PUT`` and ``PATCH /v1/subscriptions``) and the ``connector`` event source
(``GET /v1/calendars/{mailbox}/events``).

Failures are ``UpstreamError`` of a stable kind: ``connector-timeout``,
``connector-unreachable``, ``connector-refused-auth`` (401, 403), ``connector-error`` (any other
unexpected status), ``connector-bad-answer`` (unreadable, or not the answer asked for) and
``url-not-allowed`` (the connector URL, or an address its host resolves to, is refused by the
outbound policy, ``contract.outbound``); 429 and 503 are ``Throttled`` (``connector-throttled``)
with the connector's ``Retry-After``. What the connector sent is never quoted: its body could be
anything the URL points at.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bookingcache.clock import Clock
from bookingcache.contract.http import retry_after_s, schema_problems
from bookingcache.contract.outbound import (
    PRODUCTION,
    GuardedTransport,
    OutboundPolicy,
    UrlNotAllowed,
    check_url,
)
from bookingcache.contract.pool import PooledTransport
from bookingcache.contract.signing import sign_request
from bookingcache.contract.wire import WireWindow, format_utc
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.subscriptions import ConvergedSubscription
from bookingcache.errors import Throttled, UpstreamError

# Graph's subscription API takes 500 writes per 20 s per app and tenant: a connector creating
# the subscriptions of N new mailboxes needs N times this long at least (10,000 rooms linked at
# once: 400 s), so a converge's timeout grows by it for each mailbox asked for.
SECONDS_PER_SUBSCRIPTION_WRITE = 20 / 500

Answer = TypeVar("Answer", bound=BaseModel)


class SubscriptionRow(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    mailbox: str = Field(min_length=1, max_length=320)
    subscription_id: str | None = Field(default=None, alias="subscriptionId", max_length=200)
    expiration: dt.datetime | None = Field(default=None, alias="expirationDateTime")
    status: str = Field(min_length=1, max_length=32)
    error: str | None = None


class SubscriptionAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subscriptions: list[SubscriptionRow]


class ConnectorClient:
    def __init__(
        self,
        *,
        clock: Clock,
        events_timeout_s: float = 10.0,
        subscriptions_timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        policy: OutboundPolicy = PRODUCTION,
    ) -> None:
        """``events_timeout_s`` bounds a window's read (a refresh waits for it);
        ``subscriptions_timeout_s`` a converge, in which the connector may create or renew
        many subscriptions at Graph (plus ``SECONDS_PER_SUBSCRIPTION_WRITE`` per mailbox).
        ``policy``: which connector URLs may be called; when it wants public hosts and no
        ``transport`` is given, the network is reached through ``GuardedTransport``, which
        checks what a host resolves to, and otherwise through the same pool unguarded
        (``PooledTransport``)."""
        self._clock = clock
        self._policy = policy
        if transport is None:
            transport = (
                GuardedTransport(verify=verify)
                if policy.public_only
                else PooledTransport(verify=verify)
            )
        self._events_timeout_s = events_timeout_s
        self._subscriptions_timeout_s = subscriptions_timeout_s
        # trust_env=False: where the connector is reached is the tenant's setting alone.
        self._http = httpx.AsyncClient(
            transport=transport, verify=verify, follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def subscriptions_timeout_s(self, mailboxes: int) -> float:
        """How long a converge of ``mailboxes`` may take: the configured bound, plus the time
        Graph's subscription API needs to take a write for each of them."""
        return self._subscriptions_timeout_s + mailboxes * SECONDS_PER_SUBSCRIPTION_WRITE

    async def put_subscriptions(
        self,
        connector_url: str,
        *,
        secrets: Sequence[str],
        mailboxes: Sequence[str],
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        renew_now: Sequence[str] = (),
        partial: bool = False,
        staleness_bound_s: float | None = None,
    ) -> list[ConvergedSubscription]:
        """Converge the connector's subscriptions to ``mailboxes``; its row per mailbox.
        ``renew_now``: mailboxes whose subscription the connector renews whatever its expiry
        (Graph asked to reauthorize them). ``partial``: only these mailboxes' subscriptions,
        leaving the others as they are (``PATCH``; a connector older than it answers 405).
        ``staleness_bound_s``: the tenant's, within which a connector that pushes events keeps
        its reconciliation."""
        body: dict[str, Any] = {
            "mailboxes": list(mailboxes),
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "clientState": client_state,
        }
        if renew_now:
            body["renewNow"] = list(renew_now)
        if staleness_bound_s is not None:
            body["stalenessBoundS"] = staleness_bound_s
        for name, url in (
            ("notificationUrl", notification_url),
            ("lifecycleNotificationUrl", lifecycle_url),
        ):
            problem = check_url(url, self._policy)
            if problem is not None:
                raise UrlNotAllowed(f"the {name} handed to the connector is refused: {problem}")
        request = self._http.build_request(
            "PATCH" if partial else "PUT",
            self._url(connector_url, "/v1/subscriptions"),
            json=body,
            timeout=self.subscriptions_timeout_s(len(mailboxes)),
        )
        answer = await self._call(
            request, secrets=secrets, model=SubscriptionAnswer, what="the subscription call"
        )
        return [
            ConvergedSubscription(
                mailbox=row.mailbox,
                subscription_id=row.subscription_id,
                expires_at=row.expiration,
                status=row.status,
                error=row.error,
            )
            for row in answer.subscriptions
        ]

    async def read_window(
        self,
        connector_url: str,
        mailbox: str,
        *,
        secrets: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
    ) -> list[BasicEvent]:
        """The basic events of ``mailbox`` overlapping ``[start, end)``, recurrences expanded;
        ``UpstreamError`` when the connector answers for another mailbox or a narrower
        window."""
        path = f"/v1/calendars/{quote(mailbox, safe='@')}/events"
        request = self._http.build_request(
            "GET",
            self._url(connector_url, path),
            params={"start": format_utc(start), "end": format_utc(end)},
            timeout=self._events_timeout_s,
        )
        window = await self._call(
            request, secrets=secrets, model=WireWindow, what=f"the events of {mailbox}"
        )
        if window.mailbox.casefold() != mailbox.casefold():
            raise UpstreamError(
                f"the connector answered for another mailbox than {mailbox}",
                kind="connector-bad-answer",
            )
        if window.start > start or window.end < end:
            raise UpstreamError(
                "the connector answered a narrower window than asked for",
                kind="connector-bad-answer",
            )
        return [item.to_event() for item in window.events]

    def _url(self, connector_url: str, path: str) -> str:
        problem = check_url(connector_url, self._policy)
        if problem is not None:
            raise UrlNotAllowed(f"the connector URL is refused: {problem}")
        return connector_url.rstrip("/") + path

    async def _call(
        self, request: httpx.Request, *, secrets: Sequence[str], model: type[Answer], what: str
    ) -> Answer:
        sign_request(request, secrets=secrets, now=self._clock.now())
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"the connector did not answer {what} in time", kind="connector-timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the connector is unreachable for {what}: {exc.__class__.__name__}",
                kind="connector-unreachable",
            ) from exc
        status = response.status_code
        if status in (429, 503):
            raise Throttled(
                f"the connector answered {status} to {what}",
                retry_after_s=retry_after_s(response, now=self._clock.now()),
                kind="connector-throttled",
                status=status,
            )
        if status != 200:
            kind = "connector-refused-auth" if status in (401, 403) else "connector-error"
            raise UpstreamError(
                f"the connector answered {status} to {what}", kind=kind, status=status
            )
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(
                f"the connector sent an unreadable answer to {what}: {schema_problems(exc)}",
                kind="connector-bad-answer",
            ) from exc
