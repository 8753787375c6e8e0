"""App-only tokens for Graph through MSAL's ``ConfidentialClientApplication``.

One long-lived MSAL app per customer directory keeps MSAL's token cache (tokens are reused until
five minutes before expiry). MSAL is synchronous, so token calls run in a worker thread; its HTTP
goes through ``LoopBoundHttpClient``, which hands each request to the service's ``httpx``
client on the event loop. That keeps one transport seam for Graph and the authority alike and
keeps ``REQUESTS_CA_BUNDLE`` from overriding the configured CA bundle.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import msal

from bookingcache.errors import UpstreamError

_MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


# MSAL treats a cached token with less than five minutes left as expired; so does the shortcut.
_REUSE_MARGIN_S = 300.0


class LoopBoundHttpClient:
    """The ``http_client`` interface MSAL expects (``get``/``post`` returning objects with
    ``status_code``, ``text``, ``headers``, ``raise_for_status``), answered by an async httpx
    client running on ``loop``. Must be called from a thread other than the loop's."""

    def __init__(
        self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> None:
        self._client = client
        self._loop = loop
        self._timeout_s = timeout_s

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            # Waiting on the loop from the loop's own thread would deadlock.
            raise RuntimeError("MSAL must be called from a worker thread")
        request_kwargs: dict[str, Any] = {
            key: kwargs[key] for key in ("params", "data", "headers") if kwargs.get(key) is not None
        }
        data = request_kwargs.get("data")
        if isinstance(data, dict):
            # MSAL gives the certificate's client assertion as bytes, which httpx would send as
            # their repr: the form carries text.
            request_kwargs["data"] = {
                key: value.decode("ascii") if isinstance(value, bytes) else value
                for key, value in data.items()
            }
        coroutine = self._client.request(method, url, **request_kwargs)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=self._timeout_s + 5)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._call("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._call("POST", url, **kwargs)

    def close(self) -> None:
        """The async client is closed by its owner."""


class TokenProvider:
    """Tokens for one app in one customer directory. ``credential`` is what MSAL's
    ``client_credential`` takes: a client secret, or ``{"private_key": PEM, "thumbprint":
    hex}`` for a certificate (MSAL signs the client assertion with it)."""

    def __init__(
        self,
        *,
        authority_host: str,
        directory_tenant: str,
        client_id: str,
        credential: str | dict[str, str],
        scope: str,
        http: httpx.AsyncClient,
        timeout_s: float,
    ) -> None:
        self._authority = f"{authority_host.rstrip('/')}/{directory_tenant}"
        self._client_id = client_id
        self._credential = credential
        self._scope = scope
        self._http = http
        self._timeout_s = timeout_s
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    def _build(self, loop: asyncio.AbstractEventLoop) -> msal.ConfidentialClientApplication:
        host = (urlsplit(self._authority).hostname or "").casefold()
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=self._credential,
            authority=self._authority,
            # Instance discovery only knows Microsoft's clouds; a sovereign or private authority
            # is used as given.
            instance_discovery=None if host in _MICROSOFT_AUTHORITY_HOSTS else False,
            http_client=LoopBoundHttpClient(self._http, loop, self._timeout_s),
            token_cache=msal.TokenCache(),
        )

    async def token(self) -> str:
        # MSAL's cache answers too, but only through a worker thread; a token with more than
        # MSAL's own five-minute margin left is handed out directly.
        if self._token is not None and time.monotonic() < self._token[1]:
            return self._token[0]
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._app is None:
                self._app = await asyncio.to_thread(self._build, loop)
            app: Any = self._app
        try:
            result: dict[str, Any] = await asyncio.to_thread(
                app.acquire_token_for_client, scopes=[self._scope]
            )
        except Exception as exc:  # MSAL raises plain exceptions for transport and discovery
            async with self._lock:
                self._app = None
            raise UpstreamError(
                f"token request failed: {exc.__class__.__name__}", kind="graph-unreachable"
            ) from exc
        token = result.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError(
                f"token request refused: {str(result.get('error'))[:64]}",
                kind="graph-refused-auth",
            )
        expires_in = result.get("expires_in")
        if isinstance(expires_in, int | float) and expires_in > _REUSE_MARGIN_S:
            self._token = (token, time.monotonic() + float(expires_in) - _REUSE_MARGIN_S)
        return token

    async def discard(self) -> None:
        """Forget cached tokens (Graph refused one): the next call builds a fresh app."""
        async with self._lock:
            self._app = None
            self._token = None
