"""The signed calls to the service: the relay's ``POST {service}/v1/tenants/{tenant}/notifications``
and the registration of subscriptions made by the script,
``POST {service}/v1/tenants/{tenant}/subscriptions:register``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .errors import DeliveryError
from .signing import Signer


class ServiceClient:
    def __init__(self, *, base_url: str, tenant: str, signer: Signer, http: httpx.AsyncClient):
        self._tenant_url = f"{base_url.rstrip('/')}/v1/tenants/{quote(tenant, safe='')}"
        self._url = f"{self._tenant_url}/notifications"
        self._signer = signer
        self._http = http

    @property
    def url(self) -> str:
        return self._url

    async def notify(self, payload: dict[str, Any]) -> None:
        await self._post(self._url, payload)

    async def register(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Register subscriptions the script made (``registration``); the service's answer."""
        response = await self._post(f"{self._tenant_url}/subscriptions:register", payload)
        try:
            answer: dict[str, Any] = response.json()
        except ValueError as exc:
            raise DeliveryError("the service's answer is not JSON") from exc
        return answer

    async def _post(self, url: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json"}
        headers.update(self._signer.headers("POST", target, body))
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"service unreachable: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(
                f"service answered {response.status_code}: {response.text[:200]}",
                response.status_code,
            )
        return response
