"""The stream's writer (api/stream_writer.py): a pass's events reach a client as one chunk of the
response, and a client that goes away is forgotten by the writer as by the hub."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from bookingcache.api.stream_writer import StreamWriter
from bookingcache.read.stream import StreamHub
from tests.stream.conftest import StreamTenant
from tests.support.sse import open_stream
from tests.support.waiting import until


async def _head(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower(), head


async def _next_chunk(reader: asyncio.StreamReader) -> bytes:
    """The next chunk of the chunked body, as it was sent."""
    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
    chunk = await reader.readexactly(size + 2)
    return chunk[:-2]


async def test_the_events_of_one_pass_reach_a_client_as_one_chunk(
    served: tuple[FastAPI, str], tenant: StreamTenant, hub: StreamHub
) -> None:
    host, port = served[1].removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET {tenant.url}?building=HQ&floor=1 HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tenant.read_token}\r\n\r\n".encode()
        )
        await _head(reader)
        async with asyncio.timeout(10):
            first = await _next_chunk(reader)
        assert first.startswith(b"retry: 2000\n\nid: "), first
        assert b"event: snapshot\n" in first, first
        # Two rooms of the floor change while the hub is between passes: its next pass hands
        # both out, and the client gets them together.
        async with hub._lock:
            await tenant.book("r1@contoso.example", "First")
            await tenant.book("r2@contoso.example", "Second")
        async with asyncio.timeout(10):
            chunk = await _next_chunk(reader)
        blocks = [block for block in chunk.split(b"\n\n") if block]
        assert len(blocks) == 2, chunk
        assert all(b"event: room\ndata: " in block for block in blocks), chunk
        assert b'"title":"First"' in blocks[0], chunk
        assert b'"title":"Second"' in blocks[1], chunk
        assert blocks[1].startswith(b"id: "), chunk  # the newer change's position
    finally:
        writer.close()
    stream_writer: StreamWriter = served[0].state.stream_writer
    await until(lambda: hub.subscriber_count == 0, what="the hub forgot the client")
    await until(lambda: stream_writer.client_count == 0, what="the writer forgot the client")


async def test_a_stream_ended_by_the_service_finishes_its_response(
    served: tuple[FastAPI, str], tenant: StreamTenant, http: httpx.AsyncClient, hub: StreamHub
) -> None:
    stream_writer: StreamWriter = served[0].state.stream_writer
    async with open_stream(http, tenant.url, headers=tenant.reader) as stream:
        await stream.wait(1)
        assert stream_writer.client_count == 1
        for subscriber in list(hub._tenants[tenant.id].subscribers):
            hub.close(subscriber)
        # The body ends with its last chunk, and the client reads to the end.
        assert stream._reader is not None
        await asyncio.wait_for(stream._reader, 10)
        assert stream.response.is_stream_consumed
    assert stream_writer.client_count == 0
    assert hub.subscriber_count == 0
