"""A Server-Sent Events client for the change stream's tests: httpx streaming over a real
socket, the text parsed as the EventSource standard does (fields up to a blank line)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def position(self) -> int | None:
        """The change-feed position of the event's id (``<position>-<ms>``); None: no id."""
        return None if self.id is None else int(self.id.split("-", 1)[0])

    @property
    def at_ms(self) -> int | None:
        """The instant (Unix ms) of the event's id; None: no id."""
        return None if self.id is None else int(self.id.split("-", 1)[1])


@dataclass
class StreamClient:
    """One open stream: the events and comments received so far, read in the background."""

    response: httpx.Response
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: str | None = None
    first_line: str | None = None
    last_id: str | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        async for line in self.response.aiter_lines():
            if self.first_line is None:
                self.first_line = line
            if line == "":
                if "data" in fields:
                    event_id = fields.get("id")
                    if event_id is not None:
                        self.last_id = event_id
                    self.events.append(
                        Event(fields.get("event", "message"), fields["data"], event_id)
                    )
                    self._arrived.set()
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                self._arrived.set()
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                self.retry = value
            elif name == "data" and "data" in fields:
                fields["data"] += "\n" + value
            else:
                fields[name] = value

    async def wait(
        self, count: int, *, kind: str | None = None, timeout_s: float = 10.0
    ) -> list[Event]:
        """Wait until ``count`` events (of ``kind``) have arrived; all of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            chosen = [e for e in self.events if kind is None or e.event == kind]
            if len(chosen) >= count:
                return chosen
            if self._reader is not None and self._reader.done():
                self._reader.result()
                raise AssertionError(f"the stream ended after {self.events}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{count} {kind or ''} events not received: {self.events}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def wait_comment(self, *, timeout_s: float = 10.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.comments:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("no comment line received")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.comments[0]

    def rooms(self, kind: str = "room") -> list[Any]:
        return [event.json for event in self.events if event.event == kind]


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[StreamClient]:
    """An open stream of ``url`` (200 asserted), read in the background until the block ends."""
    request = client.build_request("GET", url, headers=headers, params=params)
    response = await client.send(request, stream=True)
    try:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"{response.status_code}: {response.text}")
        stream = StreamClient(response)
        stream._reader = asyncio.create_task(stream._read())
        try:
            yield stream
        finally:
            stream._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await stream._reader
    finally:
        await response.aclose()
