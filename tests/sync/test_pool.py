"""The connector client's connection pool (contract.pool): idle connections are checked on their
socket, a connection the server closed is not used again, and kept-alive connections are, over
TLS too."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpcore
import httpx
import pytest

from bookingcache.contract.pool import PooledTransport, SocketStreams, socket_readable
from graph_emulator.config import EmulatorConfig
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import new_state

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def test_a_socket_is_readable_when_data_waits_or_the_peer_closed() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert not socket_readable(ours)
        theirs.send(b"x")
        assert socket_readable(ours)
        assert ours.recv(1) == b"x"
        assert not socket_readable(ours)
        theirs.close()
        assert socket_readable(ours)  # the next read would return b"": the end
    finally:
        ours.close()
    assert socket_readable(ours)  # closed here: no descriptor left
    assert socket_readable(None)


class _Counting(httpcore.AsyncNetworkBackend):
    """anyio's backend, counting the connections it makes."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connections = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connections += 1
        return await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@pytest.fixture
async def closing_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback HTTP/1.1 server that answers one request on each connection as if keeping it
    alive, then closes it; yields its URL and the number of connections it accepted (in a
    list)."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/", accepted
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(
    closing_server: tuple[str, list[int]],
) -> None:
    url, accepted = closing_server
    counting = _Counting()
    transport = PooledTransport(backend=SocketStreams(counting))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(url)).text == "ok"
        # The server closes the kept-alive connection after its answer; the pool must see that
        # on the socket, or the next request is sent on the dead connection and fails.
        await asyncio.sleep(0.05)
        assert (await client.get(url)).text == "ok"
    assert counting.connections == accepted[0] == 2


async def test_kept_alive_tls_connections_are_used_again(tmp_path: Path) -> None:
    with BackgroundEmulator(new_state(EmulatorConfig()), tls_dir=tmp_path) as emulator:
        assert emulator.listening.cert_path is not None
        trusted = ssl.create_default_context(cafile=str(emulator.listening.cert_path))
        counting = _Counting()
        transport = PooledTransport(verify=trusted, backend=SocketStreams(counting))
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(5):
                answer = await client.get(f"{emulator.root}/v1.0/")
                assert answer.status_code < 500
        assert counting.connections == 1


class _NoLookups(httpcore.AsyncNetworkStream):
    """A stream whose attribute lookups are refused, but for its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, info: str) -> object:
        if info == "socket":
            return self.sock
        raise AssertionError(f"{info!r} was looked up on the stream")


class _NoLookupsBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _NoLookups(self.sock)


async def test_the_idle_check_asks_the_socket_not_the_stream() -> None:
    ours, theirs = socket.socketpair()
    try:
        stream = await SocketStreams(_NoLookupsBackend(ours)).connect_tcp("example.test", 443)
        assert stream.get_extra_info("is_readable") is False
        theirs.close()
        assert stream.get_extra_info("is_readable") is True
        with pytest.raises(AssertionError, match="ssl_object"):
            stream.get_extra_info("ssl_object")  # anything else is the stream's own answer
    finally:
        ours.close()


async def test_a_request_cancelled_in_its_tls_handshake_closes_its_socket() -> None:
    """httpcore leaves the socket open when a request is cancelled during the handshake (the
    server here accepts and never answers); the pool's stream closes it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    transport = PooledTransport()
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            request = asyncio.create_task(client.get(f"https://127.0.0.1:{port}/"))
            accepted, _ = await asyncio.to_thread(server.accept)
            with accepted:
                accepted.settimeout(5)
                hello = await asyncio.to_thread(accepted.recv, 1)
                assert hello == b"\x16"  # the client's TLS handshake has begun
                request.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await request

                def rest() -> bytes:
                    data = b""
                    while chunk := accepted.recv(65536):
                        data += chunk
                    return data

                # The client's end is closed: the server reads to the end of the stream, where
                # an open socket would leave it waiting until its timeout.
                await asyncio.to_thread(rest)
    finally:
        server.close()
