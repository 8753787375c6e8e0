"""The live change stream (Server-Sent Events) and the tickets browsers open it with.

``GET /v1/tenants/{tenant}/stream`` sends a snapshot of the rooms a client follows, then one
``room`` event per room whose displayed state changed (``read.stream.StreamHub`` computes them
once per change for every client), a ``reset`` when the client must start over, and a comment
line as heartbeat; the route answers through the middleware stack, and the process's
``stream_writer.StreamWriter`` writes the body. It takes the read token (or the admin token) as
``Authorization: Bearer``, or a stream ticket as ``?ticket=``: ``POST .../stream/tickets``
issues one to a caller with the read token, so that the read token itself never travels in a
URL.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bookingcache.api.availability import BEARER, ReadingDep, authorised_reading
from bookingcache.api.deps import TenantIdPath, services_of
from bookingcache.api.problems import problem_responses
from bookingcache.api.stream_writer import StreamWriter
from bookingcache.domain.availability import RoomStatus
from bookingcache.domain.events import ShowAs
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import BadTicket, InvalidInput, NotFound, Unauthorized
from bookingcache.read.stream import Opening, StreamHub
from bookingcache.read.subscriber import StreamFilter, Subscriber
from bookingcache.read.tickets import MAX_TICKET_LENGTH

EVENT_STREAM = "text/event-stream"
MAX_ROOMS = 1000
# ``<feed position>-<Unix ms>`` as sent; a bare position is taken too (see ``read.stream``).
_EVENT_ID = re.compile(r"([0-9]{1,18})(?:-([0-9]{1,15}))?")

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["stream"],
    responses=problem_responses(401, 403, 404, 422),
)


# --- wire shapes (documented in /openapi.json; the stream's data lines hold them) -------------


class MeetingOut(BaseModel):
    title: str | None = Field(description="after the tenant's title policy")
    start: dt.datetime
    end: dt.datetime
    show_as: ShowAs


class RoomStateOut(BaseModel):
    """The data of a ``room`` event, and each room of a snapshot or reset."""

    room: str
    name: str
    building: str | None
    floor: str | None
    capacity: int | None
    status: RoomStatus = Field(description="now; unknown exactly when availability says so")
    stale: bool
    next_change_at: dt.datetime | None = Field(
        description="the status's next change, looked for up to the end of the room's day"
    )
    next_status: RoomStatus | None
    current: MeetingOut | None = Field(description="the meeting giving the status now")
    next: MeetingOut | None = Field(
        description="the next meeting to start, within the cached horizon (about 15 days)"
    )


class StreamSnapshotOut(BaseModel):
    """The data of a ``snapshot`` event: the first event of a new client."""

    at: dt.datetime
    rooms: list[RoomStateOut]


class StreamResetOut(StreamSnapshotOut):
    """The data of a ``reset`` event: replace everything held with these rooms."""

    reason: str = Field(
        description="expired (last id older than the feed keeps), slow (the client's queue "
        "overflowed) or rooms (a followed room was unlinked, or the tenant's rooms or "
        "settings changed while the client was away)"
    )


class TicketOut(BaseModel):
    ticket: str = Field(description="opaque; pass it as ?ticket= to open a stream")
    expires_at: dt.datetime = Field(description="a stream must be opened before this")


def openapi_components() -> dict[str, Any]:
    """The event payloads' schemas, for the OpenAPI document's components."""
    components: dict[str, Any] = {}
    for model in (StreamSnapshotOut, StreamResetOut):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


# The ticket as an OpenAPI security scheme (the change stream's alternative to the bearer).
TICKET_SCHEME: dict[str, Any] = {
    "type": "apiKey",
    "in": "query",
    "name": "ticket",
    "description": "a stream ticket from POST /v1/tenants/{tenant}/stream/tickets",
}


def _event(name: str, data: str) -> dict[str, Any]:
    """One kind of event, as an SSE reader parses it: its name, its data (a JSON document of
    the ``data`` component) and the id it carries or inherits."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{data}"},
            },
            "id": {"type": "string", "pattern": "^[0-9]{1,18}-[0-9]{1,15}$"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }


_STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `retry: 2000`, then `snapshot` (a new client; data "
        "StreamSnapshotOut), `room` (data RoomStateOut), `reset` (data StreamResetOut) events "
        "and `: keep-alive` comments. An event id is `<change-feed position>-<Unix ms>`: "
        "the client has every change of its rooms up to that position and every change time "
        "made up to that instant. Send the last one back as Last-Event-ID (or last_event_id) "
        "to resume without gap or duplicate. The "
        "schema describes one event as an SSE reader parses it.",
        # OpenAPI 3.1 has an event stream's schema describe each event (as OpenAPI 3.2's
        # itemSchema does): its fields, and its data checked against the event's payload.
        "content": {
            EVENT_STREAM: {
                "schema": {
                    "oneOf": [
                        _event("snapshot", "StreamSnapshotOut"),
                        _event("room", "RoomStateOut"),
                        _event("reset", "StreamResetOut"),
                    ]
                }
            }
        },
    }
}


# --- endpoints -------------------------------------------------------------------------------


@router.post(
    "/stream/tickets",
    status_code=201,
    response_model=TicketOut,
    summary="A short-lived ticket to open the tenant's change stream with (for EventSource)",
    openapi_extra=BEARER,
)
async def issue_ticket(request: Request, reading: ReadingDep) -> TicketOut:
    tickets = services_of(request.app).stream_tickets
    ticket = tickets.issue(reading.tenant)
    return TicketOut(ticket=ticket.value, expires_at=ticket.expires_at)


async def stream_reader(
    request: Request,
    tenant: TenantIdPath,
    ticket: Annotated[
        str | None,
        Query(
            max_length=MAX_TICKET_LENGTH,
            description="a stream ticket (POST .../stream/tickets), instead of Authorization",
        ),
    ] = None,
) -> Tenant:
    """Who may open the stream: ``authorised_reading``'s rules for a bearer token, else a
    stream ticket issued for this tenant, unexpired, whose tenant still exists (401
    ``bad-stream-ticket`` otherwise, counted as a failed attempt; 403 for another tenant's)."""
    if request.headers.get("authorization"):
        return (await authorised_reading(request, tenant)).tenant
    if ticket is None:
        raise Unauthorized(
            "send a stream ticket as ?ticket=... or a token as 'Authorization: Bearer ...'"
        )
    services = services_of(request.app)
    throttle = request.app.state.auth_throttle
    try:
        claims = services.stream_tickets.check(ticket, tenant)
        found = await services.store.get_tenant(tenant)
        services.stream_tickets.still_valid(claims, found)
    except (BadTicket, NotFound):
        throttle.failed(throttle.client_address(request.scope), tenant, now=services.clock.now())
        raise BadTicket(
            "the stream ticket is not valid, has expired or its tenant is gone"
        ) from None
    return found


StreamReaderDep = Annotated[Tenant, Depends(stream_reader)]


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses=_STREAM_RESPONSE,
    summary="Live room states (Server-Sent Events), with a bearer token or a stream ticket",
    openapi_extra={"security": [{"HTTPBearer": []}, {"StreamTicket": []}]},
)
async def stream_endpoint(
    request: Request,
    found: StreamReaderDep,
    building: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    floor: Annotated[
        str | None, Query(min_length=1, max_length=64, description="needs building")
    ] = None,
    room: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=128)]] | None,
        Query(description="a room id to follow (repeatable)"),
    ] = None,
    last_event_id: Annotated[
        str | None, Query(description="the last event id seen (the Last-Event-ID header wins)")
    ] = None,
    last_event_header: Annotated[
        str | None, Header(alias="Last-Event-ID", include_in_schema=False)
    ] = None,
) -> Response:
    services = services_of(request.app)
    if floor is not None and building is None:
        raise InvalidInput("query.floor: 'floor' needs 'building'")
    rooms = frozenset(room or ())
    if len(rooms) > MAX_ROOMS:
        raise InvalidInput(f"query.room: at most {MAX_ROOMS} rooms")
    resume = _event_id(last_event_header if last_event_header is not None else last_event_id)
    hub = services.stream_hub
    subscriber, opening = await hub.open(
        found, StreamFilter(building, floor, rooms), last_event_id=resume
    )
    return EventStreamResponse(request.app.state.stream_writer, hub, subscriber, opening)


class EventStreamResponse(Response):
    """The stream's answer: its head goes out through the middleware stack as any answer's
    does, its body from the process's writer (``stream_writer``) until the client disconnects
    or its stream ends. The hub's subscriber is closed when it is done, whatever happens."""

    media_type = EVENT_STREAM

    def __init__(
        self, writer: StreamWriter, hub: StreamHub, subscriber: Subscriber, opening: Opening
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._stream = (writer, hub, subscriber, opening)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer, hub, subscriber, opening = self._stream
        await writer.serve(
            hub,
            subscriber,
            opening,
            scope=scope,
            receive=receive,
            send=send,
            headers=self.raw_headers,
        )


def _event_id(text: str | None) -> tuple[int, int | None] | None:
    """A client's last event id as (feed position, Unix ms or None)."""
    if text is None or text == "":
        return None
    match = _EVENT_ID.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(
            "the last event id must be an id this stream sent (<position>-<milliseconds>)"
        )
    position, at_ms = match.groups()
    return int(position), None if at_ms is None else int(at_ms)
