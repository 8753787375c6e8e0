"""One change-stream client as the hub sees it: its filter and its bounded queue of frames.

The hub appends to the queue without waiting and tells the client's writer (``notify``), which
drains it. A queue that would grow past its bound is dropped at once and replaced by a ``reset``
the writer builds when it next writes to the client (``reset_reason``), so a slow client costs
at most its bound in memory and never holds up the hub or the other clients.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bookingcache.read.roomstate import RoomFrame

# Why a client is told to start over.
RESET_EXPIRED = "expired"  # its last event id is older than the change feed keeps
RESET_SLOW = "slow"  # its queue overflowed
# A room it followed was unlinked; or, when it came back, the tenant's rooms or settings had
# changed since its last event.
RESET_ROOMS = "rooms"


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which rooms a client follows: a building (and floor), room ids, or both (a room must
    match both); nothing given: every room of the tenant."""

    building: str | None = None
    floor: str | None = None
    rooms: frozenset[str] = frozenset()

    def matches(self, room_id: str, building: str | None, floor: str | None) -> bool:
        if self.rooms and room_id not in self.rooms:
            return False
        if self.building is not None and building != self.building:
            return False
        return self.floor is None or floor == self.floor


@dataclass(frozen=True, slots=True)
class Delivery:
    """A room event on its way: the feed position it belongs to (None: time passed, or a
    change older than what the client was sent), its frame, and the instant (Unix
    milliseconds) the hub computed it for, up to which its pass followed time."""

    seq: int | None
    frame: RoomFrame
    at_ms: int


def event_id(position: int, at_ms: int) -> bytes:
    """An event's id: ``<position>-<at>``, the feed position and the instant (Unix ms) up to
    which the client has been sent every room it follows."""
    return b"%d-%d" % (position, at_ms)


class Subscriber:
    def __init__(self, tenant_id: str, stream_filter: StreamFilter, *, bound: int) -> None:
        self.tenant_id = tenant_id
        self.filter = stream_filter
        self.bound = max(1, bound)
        self.queue: deque[Delivery] = deque()
        self.reset_reason: str | None = None
        self.ended = False
        # Called (without waiting) when there is something to write: events, a reset, the end.
        self.notify: Callable[[Subscriber], None] = _ignore
        # The newest id sent, as (feed position, Unix ms): ids are strictly increasing in that
        # order; -1: none yet.
        self.last_id = -1
        self.last_at_ms = -1

    def offer(self, deliveries: Sequence[Delivery]) -> None:
        """Queue the deliveries this client follows; past the bound, drop the queue for a
        reset."""
        wanted = [
            item
            for item in deliveries
            if self.filter.matches(item.frame.room_id, item.frame.building, item.frame.floor)
        ]
        self.offer_followed(wanted)

    def offer_followed(self, wanted: Sequence[Delivery]) -> None:
        """Queue deliveries known to be of rooms this client follows."""
        if not wanted or self.ended:
            return
        if self.reset_reason is not None:
            return  # the reset carries every room's current state anyway
        if len(self.queue) + len(wanted) > self.bound:
            self.queue.clear()
            self.reset_reason = RESET_SLOW
        else:
            self.queue.extend(wanted)
        self.notify(self)

    def reset(self, reason: str) -> None:
        if self.ended:
            return
        self.queue.clear()
        if self.reset_reason is None:
            self.reset_reason = reason
        self.notify(self)

    def end(self) -> None:
        """The stream ends (its tenant went away, or the service stops)."""
        self.ended = True
        self.queue.clear()
        self.notify(self)

    def take(self) -> list[Delivery]:
        taken = list(self.queue)
        self.queue.clear()
        return taken


def _ignore(_subscriber: Subscriber) -> None:
    """A subscriber's ``notify`` before its writer is attached: the writer looks at the queue
    when it attaches."""


def room_lines(deliveries: Sequence[Delivery], subscriber: Subscriber) -> list[bytes]:
    """The SSE text of the deliveries in order (each frame's ``room`` event, encoded once for
    every client). An ``id`` goes on the last event of each run of one feed position (a pass
    hands out its time-driven events first, under the position already sent, then the feed's
    in order) and one pass, and only when it moves past the client's last id: a client that
    reconnects with it has then been sent every room of every position up to it, and every
    change time made up to its instant; ids never repeat or go back."""
    lines: list[bytes] = []
    count = len(deliveries)
    for index, item in enumerate(deliveries):
        position = subscriber.last_id if item.seq is None else max(item.seq, subscriber.last_id)
        following = deliveries[index + 1] if index + 1 < count else None
        run_ends = following is None or following.seq != item.seq or following.at_ms != item.at_ms
        if (
            run_ends
            and position > 0
            and (position, item.at_ms) > (subscriber.last_id, subscriber.last_at_ms)
        ):
            subscriber.last_id, subscriber.last_at_ms = position, item.at_ms
            lines.append(b"id: %s\n%s" % (event_id(position, item.at_ms), item.frame.event))
        else:
            lines.append(item.frame.event)
    return lines


def rooms_body(at: str, frames: Sequence[RoomFrame], *, reason: str | None = None) -> bytes:
    """``{"reason"?, "at", "rooms": [RoomState, ...]}`` from the frames' encoded states."""
    head = b'{"reason":"%s",' % reason.encode() if reason is not None else b"{"
    rooms = b",".join(frame.data for frame in frames)
    return b'%s"at":"%s","rooms":[%s]}' % (head, at.encode(), rooms)


def whole_event(kind: str, position: int, at_ms: int, body: bytes, subscriber: Subscriber) -> bytes:
    """A snapshot or a reset: it holds every room up to ``position`` as of ``at_ms``, so it
    carries that id (unless the client was already sent it, or the feed is still empty: no id
    then, and a client that reconnects gets a new snapshot)."""
    if position > 0 and (position, at_ms) > (subscriber.last_id, subscriber.last_at_ms):
        subscriber.last_id, subscriber.last_at_ms = position, at_ms
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            event_id(position, at_ms),
            kind.encode(),
            body,
        )
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), body)
