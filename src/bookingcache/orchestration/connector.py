"""The service's side of ``PUT {connector}/v1/subscriptions`` (connector/openapi.yaml): the
desired set of mailboxes goes out signed with the tenant's secret, one row per mailbox comes
back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bookingcache.clock import Clock
from bookingcache.errors import Throttled, UpstreamError
from bookingcache.sync.sources.http import retry_after_s
from bookingcache.sync.sources.signing import sign_request

FAILED = "failed"
DELETED = "deleted"


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
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._clock = clock
        self._http = httpx.AsyncClient(
            transport=transport, timeout=timeout_s, follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def put_subscriptions(
        self,
        connector_url: str,
        *,
        secret: str,
        mailboxes: Sequence[str],
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        renew_now: Sequence[str] = (),
    ) -> list[SubscriptionRow]:
        """Converge the connector's subscriptions to ``mailboxes``; its row per mailbox.
        ``UpstreamError`` (``Throttled`` with the connector's ``Retry-After``) when it failed
        as a whole. ``renew_now``: mailboxes whose subscription the connector renews whatever
        its expiry (Graph asked to reauthorize them)."""
        body: dict[str, Any] = {
            "mailboxes": list(mailboxes),
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "clientState": client_state,
        }
        if renew_now:
            body["renewNow"] = list(renew_now)
        url = f"{connector_url.rstrip('/')}/v1/subscriptions"
        request = self._http.build_request("PUT", url, json=body)
        sign_request(request, secret=secret, now=self._clock.now())
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException as exc:
            raise UpstreamError("the connector did not answer the subscription call") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the connector is unreachable: {exc.__class__.__name__}") from exc
        if response.status_code in (429, 503):
            raise Throttled(
                f"the connector answered {response.status_code}",
                retry_after_s=retry_after_s(response, now=self._clock.now()),
            )
        if response.status_code != 200:
            raise UpstreamError(
                f"the connector answered {response.status_code}: {response.text[:300]}"
            )
        try:
            answer = SubscriptionAnswer.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(f"the connector sent an unreadable answer: {exc}") from exc
        return answer.subscriptions
