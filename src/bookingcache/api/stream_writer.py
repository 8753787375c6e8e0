"""Writing the change stream to its clients: one writer per process, no task per event.

The stream's route answers through the middleware stack as every route does (authentication,
validation, problems, and the response head with the request id, CORS, security headers and the
HTTP metrics). Its body is then written here, chunk by chunk, straight into the server's
``send`` for the exchange (``ServiceApp`` keeps it in the scope under ``RAW_SEND``; the layers
in between only look at the response head, and pass body chunks on unchanged).

When the hub hands out a pass's events it tells each client's ``Outlet`` (``Subscriber.notify``).
The writer then runs once, as a plain callback right after the hub's pass, over every client
with something to send: it joins the client's pending events into one chunk and calls the
server's ``send`` for it, stepping that coroutine itself. With the connection writable, uvicorn's
``send`` finishes at once (it hands the bytes to the transport); when the client reads too
slowly, its transport is paused and ``send`` waits for it to drain: the writer leaves that
``send`` to a task of its own (``_finish``) and goes on with the other clients. Until that task
ends the client gets no new chunk; its events wait in its bounded queue, which past its bound
turns into a ``reset`` (``read.subscriber``), so a slow client never delays the others.

Each client's request task waits, without work per event, until the client disconnects (its
``receive`` says ``http.disconnect``) or its stream ends (its tenant went away, the service
stops); then the client is forgotten by the writer and the hub. A heartbeat comment goes to each
client that has been sent nothing for ``heartbeat_s``, checked every quarter of that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from bookingcache.read.stream import Opening, StreamHub
from bookingcache.read.subscriber import Subscriber, room_lines, rooms_body, whole_event

log = logging.getLogger(__name__)

# The exchange's ``send`` as the server gave it (with the security headers, which touch only the
# response head), set by ``ServiceApp`` for every HTTP request.
RAW_SEND = "bookingcache.raw_send"

RETRY = b"retry: 2000\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


class Outlet:
    """One client of the writer: its subscriber, where its bytes go, and what it waits on."""

    __slots__ = ("busy", "closed", "first", "hub", "last_write", "send", "subscriber")

    def __init__(
        self, hub: StreamHub, subscriber: Subscriber, send: Send, first: bytes, now: float
    ) -> None:
        self.hub = hub
        self.subscriber = subscriber
        self.send = send
        self.first: bytes | None = first  # the opening, not yet written
        self.busy: asyncio.Future[None] | None = None  # a send waiting for the client to read
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_write = now


class StreamWriter:
    """The process's writer of change-stream bodies (one per app, on the server's loop)."""

    def __init__(self, *, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self._outlets: dict[Subscriber, Outlet] = {}
        self._ready: dict[Outlet, None] = {}  # in the order they became ready
        self._scheduled = False
        self._heartbeat: asyncio.TimerHandle | None = None

    @property
    def client_count(self) -> int:
        return len(self._outlets)

    async def serve(
        self,
        hub: StreamHub,
        subscriber: Subscriber,
        opening: Opening,
        *,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Answer one client: the head through the stack's ``send``, then the body from here
        until the client disconnects or its stream ends. The caller has opened the subscriber;
        it is closed here whatever happens."""
        loop = asyncio.get_running_loop()
        listening: asyncio.Task[None] | None = None
        outlet: Outlet | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            first = RETRY + opening_text(hub, subscriber, opening)
            outlet = Outlet(hub, subscriber, scope.get(RAW_SEND, send), first, loop.time())
            self._outlets[subscriber] = outlet
            subscriber.notify = self._notify
            self._mark(outlet)
            self._ensure_heartbeat(loop)
            listening = asyncio.ensure_future(_until_disconnect(receive, outlet.closed))
            await outlet.closed
            if not listening.done():
                # The stream ended on the server's side: finish the body.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if listening is not None:
                listening.cancel()
            if outlet is not None:
                self._forget(outlet)
            hub.close(subscriber)

    # --- the writer ----------------------------------------------------------------------------

    def _notify(self, subscriber: Subscriber) -> None:
        outlet = self._outlets.get(subscriber)
        if outlet is not None:
            self._mark(outlet)

    def _mark(self, outlet: Outlet) -> None:
        self._ready[outlet] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write to every client with something to send (one chunk each)."""
        self._scheduled = False
        ready, self._ready = self._ready, {}
        now = asyncio.get_running_loop().time()
        room_events = 0
        hub: StreamHub | None = None
        for outlet in ready:
            if outlet.busy is not None or outlet.closed.done():
                continue  # its waiting send looks again when it is done
            subscriber = outlet.subscriber
            parts: list[bytes] = []
            if outlet.first is not None:
                parts.append(outlet.first)
                outlet.first = None
            if subscriber.reset_reason is not None:
                parts.append(opening_text(outlet.hub, subscriber, outlet.hub.current(subscriber)))
            deliveries = subscriber.take()
            if deliveries:
                lines = room_lines(deliveries, subscriber)
                room_events += len(lines)
                hub = outlet.hub
                parts += lines
            if parts:
                self._write(outlet, b"".join(parts) if len(parts) > 1 else parts[0], now)
            if subscriber.ended and not outlet.closed.done():
                outlet.closed.set_result(None)
        if hub is not None:
            hub.metrics.events.labels("room").inc(room_events)

    def _write(self, outlet: Outlet, chunk: bytes, now: float) -> None:
        outlet.last_write = now
        message: Message = {"type": "http.response.body", "body": chunk, "more_body": True}
        sending = outlet.send(message)
        if not isinstance(sending, Coroutine):  # another server's awaitable: a task runs it
            outlet.busy = asyncio.ensure_future(sending)
        else:
            try:
                waiting_on = sending.send(None)
            except StopIteration:
                return  # written (the usual case: the connection was writable)
            except Exception as exc:  # the server refused the write: end this client's stream
                log.debug("a change stream write failed", exc_info=True)
                if not outlet.closed.done():
                    outlet.closed.set_exception(exc)
                return
            outlet.busy = asyncio.ensure_future(_finish(sending, waiting_on))
        outlet.busy.add_done_callback(lambda task: self._sent(outlet, task))

    def _sent(self, outlet: Outlet, task: asyncio.Future[None]) -> None:
        outlet.busy = None
        if task.cancelled() or outlet.closed.done():
            return
        failure = task.exception()
        if failure is not None:
            outlet.closed.set_exception(failure)
            return
        subscriber = outlet.subscriber
        if subscriber.queue or subscriber.reset_reason is not None or subscriber.ended:
            self._mark(outlet)

    def _forget(self, outlet: Outlet) -> None:
        if self._outlets.get(outlet.subscriber) is outlet:
            del self._outlets[outlet.subscriber]
        self._ready.pop(outlet, None)
        if outlet.busy is not None:
            outlet.busy.cancel()
        if not outlet.closed.done():
            outlet.closed.cancel()
        if not self._outlets and self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    # --- heartbeats ----------------------------------------------------------------------------

    def _ensure_heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._heartbeat is None:
            self._heartbeat = loop.call_later(self.heartbeat_s / 4, self._beat)

    def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet_since = now - self.heartbeat_s
        for outlet in list(self._outlets.values()):
            idle = outlet.busy is None and outlet.first is None and not outlet.closed.done()
            if idle and outlet.last_write <= quiet_since:
                self._write(outlet, KEEP_ALIVE, now)
        self._heartbeat = None
        if self._outlets:
            self._heartbeat = loop.call_later(self.heartbeat_s / 4, self._beat)


async def _until_disconnect(receive: Receive, closed: asyncio.Future[None]) -> None:
    """Read the request until the client goes away (a GET's body is ignored), then end."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not closed.done():
                closed.set_result(None)
            return


class _Suspended:
    """What a stepped coroutine yielded (a future it waits on), handed up to the task that
    now runs it, and what the task sends back when it resumes."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


async def _finish(sending: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Run to its end, as a task would, a coroutine already stepped once (``StreamWriter._write``)
    that yielded ``waiting_on``: each yield is passed up to this task, each resumption and
    each exception (a cancellation) down to the coroutine."""
    while True:
        try:
            resumed = await _Suspended(waiting_on)
        except BaseException as exc:  # noqa: BLE001 (passed down, as a task would)
            try:
                waiting_on = sending.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = sending.send(resumed)
        except StopIteration:
            return


def opening_text(hub: StreamHub, subscriber: Subscriber, opening: Opening) -> bytes:
    """What a client is sent first (a snapshot, a reset, or the rooms it missed), or a reset."""
    at = hub.now().isoformat().replace("+00:00", "Z")
    if opening.kind == "resume":
        lines = room_lines(opening.missed, subscriber)
        hub.metrics.events.labels("room").inc(len(lines))
        return b"".join(lines)
    if opening.kind == "reset":
        assert opening.reason is not None
        hub.metrics.events.labels("reset").inc()
        hub.metrics.resets.labels(opening.reason).inc()
        body = rooms_body(at, opening.frames, reason=opening.reason)
    else:
        hub.metrics.events.labels("snapshot").inc()
        body = rooms_body(at, opening.frames)
    return whole_event(opening.kind, opening.position, opening.at_ms, body, subscriber)
