"""The single-room availability read without the framework's routing: what lobby displays and
phones ask most, ``GET /v1/tenants/{tenant}/rooms/{room}/availability``.

FastAPI's routing, dependency solving and parameter validation cost about as much CPU as the
answer itself (which the read model mostly has encoded already). ``ServiceApp`` therefore
offers these requests to ``RoomAvailabilityRead`` first. It answers only the usual, successful
request, and only the way the documented route would:

- a GET of exactly that path, with a well-formed tenant id, no query or only
  ``min_free_minutes`` as plain digits within 1..1440, and no request body;
- a bearer token that is the admin token or the tenant's own read token (checked as
  ``availability.authorised_reading`` does), a known tenant and a linked room.

Anything else (a bad or missing token, an unknown tenant or room, another query, a database
that fails) is handed to the full stack before anything is sent, which answers it as always:
its problem, its throttling of failed tokens. The answer carries what the middleware stack
would add (the request id, CORS headers, the HTTP metrics under the route's template; the
security headers come from ``ServiceApp`` for both ways in), and the body is the same bytes
(``answers.room_answers``). tests/availability/test_fast_reads.py holds the two ways to the
same answers.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import logging
import re
import time
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Scope, Send

from bookingcache.api import request_id as request_ids
from bookingcache.api.answers import room_answers
from bookingcache.api.availability import DEFAULT_MIN_FREE_MINUTES
from bookingcache.api.deps import TENANT_ID_PATTERN, read_token_tenant
from bookingcache.api.metrics import HttpMetrics
from bookingcache.errors import BookingCacheError

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

ROUTE = "/v1/tenants/{tenant}/rooms/{room}/availability"
PATH = re.compile(r"/v1/tenants/([^/]+)/rooms/([^/]+)/availability")
_TENANT = re.compile(TENANT_ID_PATTERN)
_MIN_FREE_QUERY = re.compile(rb"min_free_minutes=([1-9][0-9]{0,3})")
_MAX_MIN_FREE = 1440
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_JSON = (b"content-type", b"application/json")
_MIN_FREE = {minutes: dt.timedelta(minutes=minutes) for minutes in range(1, _MAX_MIN_FREE + 1)}


class RoomAvailabilityRead:
    """Answers the usual single-room read, or declines (``__call__`` returns False) having
    sent nothing."""

    def __init__(self, app: FastAPI, *, cors: CORSMiddleware | None) -> None:
        self.app = app
        self.cors = cors

    async def __call__(self, scope: Scope, send: Send, tenant_id: str, room_id: str) -> bool:
        started = time.perf_counter()
        services = getattr(self.app.state, "services", None)
        if services is None or _TENANT.fullmatch(tenant_id) is None:
            return False
        min_free = _min_free(scope.get("query_string", b""))
        if min_free is None:
            return False
        token: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if token is None:  # the first one counts, as for the route
                    token = value
            elif name in _BODY_HEADERS:
                return False
        if token is None:
            return False
        scheme, _, presented = token.decode("latin-1").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return False
        model = services.read_model
        try:
            if not hmac.compare_digest(presented.encode(), services.admin_token.encode()):
                claimed = read_token_tenant(presented)
                if claimed != tenant_id or not await model.access.read_token_valid(
                    tenant_id, presented
                ):
                    return False
            tenant = await model.access.tenant(tenant_id)
            view = await model.view(tenant)
            entry = view.rooms.get(room_id)
            if entry is None:
                return False  # perhaps linked by another process: the route looks again
            [body] = await room_answers(
                model,
                view,
                [entry],
                tenant=tenant,
                now=services.clock.now(),
                start=None,
                end=None,
                min_free=min_free,
            )
        except BookingCacheError:
            return False  # the full stack meets the same error and answers it
        except Exception:  # the full stack answers it; its 500 is logged there as always
            log.debug("the single-room fast path declined after an error", exc_info=True)
            return False
        request_id = request_ids.assign(scope).encode("ascii")
        out = _with_request_id(send, request_id)
        if self.cors is not None:
            # The CORS middleware's own answer headers, as the stack would add them.
            out = functools.partial(self.cors.send, send=out, request_headers=Headers(scope=scope))
        await out(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode("ascii")), _JSON],
            }
        )
        await out({"type": "http.response.body", "body": body})
        metrics: HttpMetrics = self.app.state.http_metrics
        metrics.observe("GET", ROUTE, 200, time.perf_counter() - started)
        return True


def _min_free(query: bytes) -> dt.timedelta | None:
    """The minimum free length the query asks for; None for a query the fast path leaves to the
    full stack."""
    if not query:
        return _MIN_FREE[DEFAULT_MIN_FREE_MINUTES]
    match = _MIN_FREE_QUERY.fullmatch(query)
    if match is None:
        return None
    return _MIN_FREE.get(int(match[1]))


def _with_request_id(send: Send, request_id: bytes) -> Send:
    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (request_ids.HEADER, request_id)]
        await send(message)

    return send_with_id
