"""The Graph source's transport (contract.aiohttp_transport): requests go out as httpx built
them, answers come back as httpx's, failures are raised as httpx's exceptions, kept-alive TLS
connections are used again, and closing or cancelling leaves no socket open."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from bookingcache.contract.aiohttp_transport import AiohttpTransport
from graph_emulator.config import EmulatorConfig
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import new_state
from graph_emulator.tls import write_self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Server:
    """A loopback server running ``handler`` on each connection; keeps what it was sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.ended = 0  # connections the client closed
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
            if await reader.read() == b"":
                self.ended += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.ended += 1
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[_Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> _Server:
        state = _Server(handler)
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)


async def _cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(_answer(b"x" * 100)[:-60])  # 40 of the 100 bytes promised
    await writer.drain()
    writer.close()


async def test_a_request_goes_out_as_httpx_built_it(
    serve: Callable[[Handler], Awaitable[_Server]],
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            seen.append(await _read_request(reader))
            writer.write(_answer(b'{"ok": true}', "Content-Type: application/json"))
            await writer.drain()

    server = await serve(handler)
    async with httpx.AsyncClient(transport=AiohttpTransport(), base_url=server.url) as client:
        answer = await client.get(
            "/v1.0/users/room%40contoso.com/calendarView/delta",
            params={"$deltatoken": "a+b/c=="},
            headers={"Authorization": "Bearer t", "Prefer": 'outlook.timezone="UTC"'},
        )
        posted = await client.post("/echo", content=b"hello", headers={"X-One": "1"})
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    assert answer.http_version == "HTTP/1.1"
    assert answer.reason_phrase == "OK"
    assert posted.status_code == 200
    head, body = seen[0]
    request_line, *lines = head.decode().strip().split("\r\n")
    # The path and query exactly as httpx encoded them: not decoded, not re-quoted.
    assert request_line == (
        "GET /v1.0/users/room%40contoso.com/calendarView/delta?%24deltatoken=a%2Bb%2Fc%3D%3D "
        "HTTP/1.1"
    )
    names = [line.split(":", 1)[0].lower() for line in lines]
    # httpx's headers and no others (no User-Agent of aiohttp's, no cookie).
    assert sorted(names) == sorted(
        ["host", "accept", "accept-encoding", "connection", "user-agent", "authorization", "prefer"]
    )
    assert "user-agent: python-httpx/" in head.decode().lower()
    assert body == b""
    post_head, post_body = seen[1]
    assert post_head.startswith(b"POST /echo HTTP/1.1")
    assert b"x-one: 1" in post_head.lower()
    assert post_body == b"hello"
    assert server.connections == 1  # kept alive


async def test_a_compressed_answer_is_decoded_by_httpx(
    serve: Callable[[Handler], Awaitable[_Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer(gzip.compress(b'{"value": []}'), "Content-Encoding: gzip"))
        await writer.drain()

    server = await serve(handler)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        answer = await client.get(server.url)
    assert answer.json() == {"value": []}


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_a_server_that_never_answers_is_a_read_timeout(
    serve: Callable[[Handler], Awaitable[_Server]],
) -> None:
    server = await serve(_never_answer)
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url)


async def test_a_body_cut_short_is_a_protocol_error(
    serve: Callable[[Handler], Awaitable[_Server]],
) -> None:
    server = await serve(_cut_short)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)


async def test_closing_the_client_closes_its_kept_alive_connections(
    serve: Callable[[Handler], Awaitable[_Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer(b"ok"))
        await writer.drain()

    server = await serve(handler)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        assert (await client.get(server.url)).text == "ok"
    for _ in range(100):
        if server.ended == 1:
            break
        await asyncio.sleep(0.01)
    assert server.ended == 1


async def test_a_cancelled_request_closes_its_connection(
    serve: Callable[[Handler], Awaitable[_Server]],
) -> None:
    asked = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        asked.set()  # and never answers

    server = await serve(handler)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        request = asyncio.create_task(client.get(server.url))
        await asyncio.wait_for(asked.wait(), 5)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        for _ in range(200):
            if server.ended == 1:
                break
            await asyncio.sleep(0.01)
        # Closed at once, not when the client closes.
        assert server.ended == 1


async def test_kept_alive_tls_connections_are_used_again(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path, now=dt.datetime.now(dt.UTC))
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    state = _Server(_keep_answering)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(transport=AiohttpTransport(verify=trusted)) as client:
            for _ in range(5):
                assert (await client.get(f"https://127.0.0.1:{port}/")).text == "ok"
        assert state.connections == 1
    finally:
        server.close()
        await server.wait_closed()


async def _keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while not reader.at_eof():
        try:
            await _read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(_answer(b"ok"))
        await writer.drain()


async def test_an_untrusted_certificate_is_a_connect_error(tmp_path: Path) -> None:
    with BackgroundEmulator(new_state(EmulatorConfig()), tls_dir=tmp_path) as emulator:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{emulator.root}/v1.0/")


async def test_a_closed_transport_refuses_new_requests() -> None:
    transport = AiohttpTransport()
    await transport.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:1/"))
