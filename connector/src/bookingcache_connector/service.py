"""The signed call to the service: ``POST {service}/v1/tenants/{tenant}/notifications``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .errors import DeliveryError
from .signing import Signer


class ServiceClient:
    def __init__(self, *, base_url: str, tenant: str, signer: Signer, http: httpx.AsyncClient):
        self._url = f"{base_url.rstrip('/')}/v1/tenants/{quote(tenant, safe='')}/notifications"
        self._signer = signer
        self._http = http

    @property
    def url(self) -> str:
        return self._url

    async def notify(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        parts = urlsplit(self._url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json"}
        headers.update(self._signer.headers("POST", target, body))
        try:
            response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"service unreachable: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"service answered {response.status_code}: {response.text[:200]}")
