"""httpx's transport interface over aiohttp's connection pool, for the Graph source's reads.

The worker reads Graph about once per change. Through httpx's own transport (httpcore's pool,
h11's parser, anyio's TLS streams) a keep-alive GET of a calendar page costs about 1.5 ms of
CPU on this project's 2-core benchmark machine; through aiohttp's pool and C parser it costs
about half that, with the client above it (``httpx.AsyncClient``: URLs, headers, timeouts, the
response object every caller reads) unchanged. docs/benchmarks.md holds the figures.

What httpx's callers rely on is kept:

- aiohttp's failures are raised as httpx's: a timeout as ``ConnectTimeout`` or ``ReadTimeout``
  and anything else on the way as a ``TransportError`` (``ConnectError``,
  ``RemoteProtocolError``, ``ReadError``), also while the body is read;
- the request's timeouts (httpx's ``connect``, ``read`` and ``pool``) apply per request;
- the request goes out as httpx built it (no headers added, no cookies kept, no redirect
  followed, no body decompressed: httpx decodes the ``Content-Encoding`` itself);
- the pool is created on first use, inside the event loop that uses it, and ``aclose``
  closes every connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import yarl

from bookingcache.contract.pool import DEFAULT_LIMITS

_CHUNK = 64 * 1024


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _as_httpx(exc, self._request, reading=True) from exc

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end, else the connection is closed.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` sending each request through one aiohttp session."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else None
        if context is None:
            context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._ssl = context
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _pool(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport was closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            response = await self._pool().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _as_httpx(exc, request, reading=False) from exc
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode(
                    "ascii"
                )
                if response.version is not None
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _as_httpx(exc: BaseException, request: httpx.Request, *, reading: bool) -> httpx.HTTPError:
    """aiohttp's failure as the httpx exception a caller of httpx expects."""
    message = str(exc) or exc.__class__.__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for the pool
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unresolved, TLS refused
        return httpx.ConnectError(message, request=request)
    if reading or isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):  # an answer that is not HTTP
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)
