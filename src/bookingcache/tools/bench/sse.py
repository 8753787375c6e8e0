"""A lean change-stream client for the benchmarks: one raw asyncio connection per stream, the
HTTP/1.1 head and the chunked body read by hand, events handed to a callback as they arrive.

Thousands of these fit in one process (no HTTP client library per connection): what the
benchmarks measure is the service, not the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from bookingcache.tools.bench.http import BenchError

# (event name, data, id or None, arrival on time.perf_counter())
OnEvent = Callable[[str, bytes, str | None, float], None]


class StreamClient:
    def __init__(self, base_url: str, target: str, token: str, on_event: OnEvent) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.target = target
        self.token = token
        self.on_event = on_event
        self.events = 0
        self.connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        """Connect, read events until the server ends the stream or the task is cancelled."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        try:
            writer.write(
                f"GET {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                status = head.split(b"\r\n", 1)[0]
                raise BenchError(f"the stream answered {status!r}")
            self.connected.set()
            pending = b""
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                arrived = time.perf_counter()
                pending += chunk[:-2]
                *blocks, pending = pending.split(b"\n\n")
                for block in blocks:
                    self._parse(block, arrived)
        finally:
            writer.close()

    def _parse(self, block: bytes, arrived: float) -> None:
        name = "message"
        data = b""
        event_id: str | None = None
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
            elif line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"id: "):
                event_id = line[4:].decode()
        if data:
            self.events += 1
            self.on_event(name, data, event_id, arrived)
