"""Graph tokens through MSAL's client-credentials flow, one long-lived app per process.

MSAL's own HTTP client is a ``requests`` session, and ``requests`` lets ``REQUESTS_CA_BUNDLE`` /
``CURL_CA_BUNDLE`` silently override the ``verify=`` MSAL passes. So MSAL gets a small client
built on httpx with an explicit SSL context and ``trust_env=False``: the configured CA bundle is
the one used, whatever the environment says.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import msal

from .config import Settings
from .errors import AuthError
from .metrics import Metrics

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# An OAuth error code (``invalid_client``, ``temporarily_unavailable``) is a metric label as is.
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


class TokenProvider(Protocol):
    async def token(self) -> str: ...

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (Graph refused it), so that the next ``token()`` asks anew."""


class MsalHttpClient:
    """The ``get``/``post`` pair MSAL calls, answered by a synchronous httpx client."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if isinstance(data, Mapping):
            # MSAL hands over some form values as bytes (the certificate's client assertion);
            # requests form-encodes those as text, httpx would write their repr.
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        return self._client.post(url, params=params, data=data, headers=headers)

    def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return self._client.get(url, params=params, headers=headers)

    def close(self) -> None:
        self._client.close()


def msal_http_client(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> MsalHttpClient:
    client = httpx.Client(
        verify=settings.ssl_context(),
        trust_env=False,
        timeout=settings.http_timeout_s,
        transport=transport,
    )
    return MsalHttpClient(client)


class MsalTokenProvider:
    """Holds the one ``ConfidentialClientApplication`` (and with it the token cache)."""

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: MsalHttpClient | None = None,
        scope: str = GRAPH_SCOPE,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._http = http_client or msal_http_client(settings)
        self._scope = scope
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _application(self) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                s = self._settings
                self._app = msal.ConfidentialClientApplication(
                    s.client_id,
                    client_credential=s.msal_credential(),
                    authority=s.authority,
                    http_client=self._http,
                    # Discovery at login.microsoftonline.com only makes sense for Microsoft's
                    # own clouds; a private authority (the emulator) is taken as given.
                    instance_discovery=None if s.is_microsoft_authority else False,
                )
            return self._app

    def token_sync(self) -> str:
        """A token from MSAL's cache or the token endpoint; every way that fails is an
        :class:`AuthError` (``error`` is the OAuth error code, or ``server_error``,
        ``timeout``, ``unreachable``, ``invalid_authority``)."""
        try:
            return self._acquire()
        except AuthError as exc:
            reason = exc.error if _ERROR_CODE.match(exc.error) else "other"
            self._metrics.inc("token_failures", reason)
            raise

    def _acquire(self) -> str:
        try:
            result = self._application().acquire_token_for_client(scopes=[self._scope])
        except ValueError as exc:  # MSAL raises ValueError for an unreachable/invalid authority
            raise AuthError("invalid_authority", str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise AuthError("timeout", f"the token endpoint did not answer in time: {exc}") from exc
        except httpx.HTTPError as exc:
            raise AuthError("unreachable", f"token endpoint unreachable: {exc}") from exc
        except msal.exceptions.MsalServiceError as exc:
            # MSAL's answer to a 5xx from the token endpoint ("HTTP Error: 503"), also while it
            # holds the endpoint's Retry-After.
            raise AuthError("server_error", f"the token endpoint failed: {exc}") from exc
        except msal.exceptions.MsalError as exc:
            raise AuthError("msal_error", str(exc)) from exc
        token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(token, str):
            error = str(result.get("error", "unknown_error")) if result else "unknown_error"
            description = str(result.get("error_description", "")) if result else ""
            raise AuthError(error, description)
        return token

    def invalidate(self, token: str) -> None:
        """Drop ``token`` from MSAL's cache (only that one: a newer token another request
        already fetched stays)."""
        app = self._app
        if app is None:
            return
        cache = app.token_cache
        kind = msal.TokenCache.CredentialType.ACCESS_TOKEN
        for entry in list(cache.search(kind)):
            if entry.get("secret") == token:
                cache.remove_at(entry)
                self._metrics.inc("token_refreshes", "graph_refused")

    async def token(self) -> str:
        return await asyncio.to_thread(self.token_sync)

    def close(self) -> None:
        self._http.close()
