"""httpx's transport over a connection pool that checks its idle connections cheaply.

Before httpcore's pool gives a request a connection, and again when a response is closed, it
asks every pooled connection whether it has expired; for an idle one that means asking its
network stream whether the socket is readable (the server closed it). httpcore's anyio stream
answers through anyio's attribute lookup, and a TLS stream rebuilds the mapping of all its
attributes on every lookup: tens of microseconds per connection per pass. A worker with 64
reads in flight to Graph keeps about 64 connections in the pool, so every request paid
milliseconds of CPU before it was sent. ``SocketStreams`` keeps each connection's socket from
when it was made and answers with one ``poll`` of it, which is what the lookup ends in.

The connector client uses this pool; the Graph source's reads, the service's busiest outbound
path, go over aiohttp's (``aiohttp_transport``), at about half the CPU again.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

# httpx's own defaults for a client's pool (keep-alive expiry 5 s).
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def socket_readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once: data waiting, or the peer closed the connection. A
    socket that is gone counts as readable, so that its connection is dropped."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    if not hasattr(select, "poll"):
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """A connection's stream that answers ``is_readable`` from the socket it was made on."""

    __slots__ = ("_inner", "_socket")

    def __init__(self, inner: httpcore.AsyncNetworkStream, sock: socket.socket | None) -> None:
        self._inner = inner
        self._socket = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (httpcore's interface)
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore's interface)
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        try:
            wrapped = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # httpcore closes the stream when the handshake fails, but not when the request is
            # cancelled (a stop, a caller giving up) in the middle of it: the socket would stay
            # open until the stream is collected.
            with anyio.CancelScope(shield=True):
                await self._inner.aclose()
            raise
        # TLS runs over the same socket: a closed connection still shows on it.
        return _Stream(wrapped, self._socket)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return socket_readable(self._socket)
        return self._inner.get_extra_info(info)


class SocketStreams(httpcore.AsyncNetworkBackend):
    """httpcore's network backend (anyio's, or ``inner``) with ``_Stream``'s cheap check."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _Stream(stream, stream.get_extra_info("socket"))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _Stream(stream, stream.get_extra_info("socket"))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PooledTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (no proxies from the environment) whose pool connects through
    ``backend`` (``SocketStreams`` over anyio by default). httpx takes no network backend, so
    its pool is replaced by one made with the same settings."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        backend: httpcore.AsyncNetworkBackend | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        context = verify if isinstance(verify, ssl.SSLContext) else None
        if context is None:
            context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend or SocketStreams(),
        )
