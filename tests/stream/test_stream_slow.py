"""A client that does not read: its queue is bounded, it is cut off to a ``reset``, and the
others keep getting their events meanwhile."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import Room
from bookingcache.read.stream import StreamHub
from bookingcache.settings import Settings
from bookingcache.store.port import Store
from tests.stream.conftest import StreamTenant, make_tenant
from tests.support.availability import event
from tests.support.servers import bound_socket
from tests.support.sse import open_stream
from tests.support.waiting import until

ROOMS = 120
QUEUE = 4


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"change_feed_poll_ms": 50, "stream_queue_events": QUEUE})


@pytest.fixture
def server_socket() -> socket.socket:
    """A server whose connections have small, fixed send buffers (accepted sockets inherit
    them), so that a client that does not read holds up its sender soon."""
    sock = bound_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    return sock


async def _big_tenant(
    served: tuple[FastAPI, str], http: httpx.AsyncClient, clock: FixedClock
) -> StreamTenant:
    """Rooms whose states are large (long meeting titles): one snapshot fills the socket's
    buffers of a client that does not read."""
    store: Store = served[0].state.services.store
    tenant = await make_tenant(http, store, clock, rooms={})
    await store.import_rooms(
        tenant.id,
        [
            Room(tenant.id, f"b{n:03}", f"b{n:03}@contoso.example", f"B{n}", "HQ", "1")
            for n in range(ROOMS)
        ],
    )
    for n in range(ROOMS):
        long = event(f"b{n}", "08:00", "10:00", title=f"Meeting {n} " + "x" * 3000)
        await tenant.sync(f"b{n:03}@contoso.example", [long])
    return tenant


async def _raw_stream(
    base_url: str, path: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def test_a_slow_client_gets_a_reset_and_the_others_their_events(
    served: tuple[FastAPI, str], http: httpx.AsyncClient, clock: FixedClock, hub: StreamHub
) -> None:
    tenant = await _big_tenant(served, http, clock)
    reader, writer = await _raw_stream(served[1], tenant.url, tenant.read_token)
    try:
        async with open_stream(http, tenant.url, headers=tenant.reader) as brisk:
            await brisk.wait(1)
            await until(lambda: hub.subscriber_count == 2, what="both clients subscribed")
            for n in range(QUEUE + 2):
                await tenant.book(f"b{n:03}@contoso.example", f"Change {n}")
                await brisk.wait(2 + n)
            assert [e.json["room"] for e in brisk.events[1:]] == [
                f"b{n:03}" for n in range(QUEUE + 2)
            ]
        # The slow client now reads: its snapshot, then a reset with every room as it is now.
        received = b""
        async with asyncio.timeout(20):
            # (The body is chunked: the event is whole once its blank line has arrived.)
            while b"\n\n" not in received.partition(b"event: reset\n")[2]:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 3)
                except TimeoutError:
                    raise AssertionError(
                        repr((len(received), received[:300], received[-600:]))
                    ) from None
                assert chunk, "the stream ended before its reset"
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        reset_data = body.split(b"event: reset\ndata: ", 1)[1].split(b"\n", 1)[0]
        assert b'"reason":"slow"' in reset_data
        assert b"Change 5" in reset_data
    finally:
        writer.close()
    await until(lambda: hub.subscriber_count == 0, what="the subscribers freed")
    registry: CollectorRegistry = served[0].state.metrics_registry
    assert registry.get_sample_value("bookingcache_stream_resets_total", {"reason": "slow"}) == 1
