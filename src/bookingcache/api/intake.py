"""The notification endpoints: Graph's webhooks (Alternative 1) and the connector's signed relay
call (Alternative 2). Both answer 202 only after what they accepted is committed to the inbox;
see docs/intake.md."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from bookingcache.api import request_id as request_ids
from bookingcache.api.deps import TENANT_ID_PATTERN, services_of
from bookingcache.api.limits import BodyLimits, check_declared, limited, read_body
from bookingcache.api.metrics import HttpMetrics
from bookingcache.api.problems import (
    ProblemError,
    problem_of,
    problem_responses,
    response_of,
    unexpected_problem,
)
from bookingcache.api.throttle import AuthThrottle
from bookingcache.contract.signing import MAX_ID_LENGTH
from bookingcache.errors import BadSignature, BookingCacheError, UnsupportedMediaType
from bookingcache.intake.graph import GraphBatch
from bookingcache.intake.relay import RelayCall
from bookingcache.intake.service import is_json

log = logging.getLogger(__name__)

router = APIRouter(tags=["notifications"])

TenantPath = Annotated[
    str, Path(description="The tenant's id", pattern=TENANT_ID_PATTERN, max_length=63)
]
_GRAPH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Validation handshake: the decoded validationToken",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    202: {"description": "Accepted: every authentic notification of the batch is stored"},
    **problem_responses(400, 413, 415, 503),
}


# The bodies and headers of the notification endpoints, described for the OpenAPI document:
# the routes read their bodies themselves (a signature is checked over the bytes as sent, and
# Graph's webhooks are answered before the router), so FastAPI cannot infer them.
_GRAPH_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "validationToken",
            "in": "query",
            "required": False,
            "description": "Graph's validation handshake: answered 200 with the decoded token "
            "as text/plain, whatever the body",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": False,
        "description": "A Graph changeNotificationCollection (none with the handshake)",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ChangeNotificationCollection"}
            }
        },
    },
}
_SIGNATURE_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "Standard Webhooks: the call's unique id (a replay is refused)",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Standard Webhooks: Unix seconds, within 5 minutes of the service's clock",
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Standard Webhooks: `v1,<base64 HMAC-SHA256>` over "
        "`POST <path>\\n` and the body, with the tenant's signing secret; several may be "
        "given, separated by spaces",
        "schema": {"type": "string", "minLength": 1},
    },
]
_RELAY_OPENAPI: dict[str, Any] = {
    "parameters": _SIGNATURE_HEADERS,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/RelayNotification"}}
        },
    },
}


def openapi_components() -> dict[str, Any]:
    """The schemas of the notification bodies (the relay's is the connector contract's
    ``RelayNotification``)."""
    components: dict[str, Any] = {}
    for name, model in (
        ("ChangeNotificationCollection", GraphBatch),
        ("RelayNotification", RelayCall),
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
        components.update(schema.pop("$defs", {}))
        components[name] = schema
    return components


class BareExchange:
    """A notification POST served as a bare ASGI exchange. ``ServiceApp`` hands matching
    requests here before the middleware stack and the router (senders judge an endpoint by its
    latency and throughput, and these requests need none of the routing machinery); the
    documented FastAPI routes below answer with the same object, so both ways in behave
    identically.

    What the middleware stack gives other requests comes from the same code here: the request
    id (``request_id.assign``), the body limit (``limits``), the HTTP metrics
    (``HttpMetrics.observe``) and the problem answers (``problems.problem_of``)."""

    # The route's template, the label of its HTTP metrics.
    route = ""

    def __init__(self, app: FastAPI, *, tenant: str) -> None:
        self.app = app
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = request_ids.assign(scope)
        try:
            status = await self._answer(scope, receive, send, request_id)
        except (ProblemError, BookingCacheError) as exc:
            problem = exc if isinstance(exc, ProblemError) else problem_of(exc)
            status = await _send_problem(scope, send, request_id, problem)
        except Exception:  # the request boundary, as the app's unexpected-error handler
            log.exception(
                "unhandled error on POST %s (request %s)",
                scope["path"],
                request_id,
                extra={"request_id": request_id},
            )
            status = await _send_problem(scope, send, request_id, unexpected_problem(request_id))
        metrics: HttpMetrics = self.app.state.http_metrics
        metrics.observe("POST", self.route, status, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        """The exchange's answer, sent; its status. Raises what becomes a problem answer."""
        raise NotImplementedError

    def _body(self, scope: Scope, receive: Receive) -> Awaitable[bytes]:
        """The request's body, within the path's limit (413 past it)."""
        limits: BodyLimits = self.app.state.body_limits
        limit = limits.limit_for(scope["path"])
        check_declared(scope, limit)
        return read_body(limited(receive, limit))


class GraphWebhook(BareExchange):
    """Graph's POSTs to either webhook URL: the handshake, 202, or a problem."""

    def __init__(self, app: FastAPI, *, kind: str, tenant: str) -> None:
        super().__init__(app, tenant=tenant)
        self.route = f"/graph/{kind}/{{tenant}}"

    async def _answer(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        query = scope.get("query_string", b"")
        if query:
            token = validation_token(query)
            if token is not None:
                # Graph's handshake: the decoded token, verbatim, as plain text, within 10 s.
                await _send(
                    send,
                    200,
                    token.encode(),
                    request_id,
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"x-content-type-options", b"nosniff"),
                )
                return 200
        intake = services_of(self.app).intake
        try:
            body = await self._body(scope, receive)
            content_type = next(
                (value for name, value in scope["headers"] if name == b"content-type"), None
            )
            if not is_json(content_type.decode("latin-1") if content_type else None):
                raise UnsupportedMediaType("notifications must be sent as application/json")
            await intake.receive_graph(self.tenant, body)
        except BookingCacheError as exc:
            intake.metrics.count_rejected("alt1", exc)
            raise
        await _send(send, 202, b"", request_id)
        return 202


def validation_token(query: bytes) -> str | None:
    """Graph's ``validationToken`` query parameter, decoded, if the query holds one."""
    if b"validationToken" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "validationToken":
            return value
    return None


async def _send(
    send: Send, status: int, body: bytes, request_id: str, *headers: tuple[bytes, bytes]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-length", str(len(body)).encode()),
                (request_ids.HEADER, request_id.encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_problem(scope: Scope, send: Send, request_id: str, problem: ProblemError) -> int:
    response = response_of(Request(scope), problem)
    await _send(
        send,
        problem.status,
        bytes(response.body),
        request_id,
        *((name, value) for name, value in response.raw_headers if name != b"content-length"),
    )
    return problem.status


class _Handover(Response):
    """A route's answer that is the webhook's own exchange (the request's body is unread)."""

    def __init__(self, webhook: GraphWebhook) -> None:
        super().__init__(status_code=202)
        self.webhook = webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.webhook(scope, receive, send)


WEBHOOK_PATH = re.compile(
    r"/graph/(notifications|lifecycle)/(" + TENANT_ID_PATTERN.strip("^$") + ")"
)


@router.post(
    "/graph/notifications/{tenant}",
    status_code=202,
    summary="Graph change notifications (Alternative 1) and the validation handshake",
    response_class=Response,
    responses=_GRAPH_RESPONSES,
    openapi_extra=_GRAPH_OPENAPI,
)
async def graph_notifications(request: Request, tenant: TenantPath) -> Response:
    return _Handover(GraphWebhook(request.app, kind="notifications", tenant=tenant))


@router.post(
    "/graph/lifecycle/{tenant}",
    status_code=202,
    summary="Graph lifecycle notifications (Alternative 1) and the validation handshake",
    response_class=Response,
    responses=_GRAPH_RESPONSES,
    openapi_extra=_GRAPH_OPENAPI,
)
async def graph_lifecycle(request: Request, tenant: TenantPath) -> Response:
    return _Handover(GraphWebhook(request.app, kind="lifecycle", tenant=tenant))


class RelayAccepted(BaseModel):
    """What a relay call did. Parts naming a mailbox that is not a calendar of the tenant (a
    room unlinked since Graph notified, or another tenant's mailbox) are acknowledged and
    ignored, so the relay does not send them again; they are listed here and counted in
    ``bookingcache_intake_ignored_notifications{reason="unknown_mailbox"}``."""

    notifications: int = Field(description="changes, lifecycle events and resyncs stored")
    windows_applied: int = Field(alias="windowsApplied", description="pushed windows applied")
    ignored_mailboxes: list[str] = Field(
        alias="ignoredMailboxes", description="mailboxes that are not calendars of the tenant"
    )


@router.post(
    "/v1/tenants/{tenant}/notifications",
    status_code=202,
    summary="The connector relay's signed notification call (Alternative 2)",
    description=(
        "Signed with Standard Webhooks over the request line and the body. The body is the "
        "`RelayNotification` schema of the connector contract (`connector/openapi.yaml`), "
        "enforced as published: `changes`, `lifecycle` and `resync` are required, and so is "
        "every field of their items, of a window and of a pushed event. A body that is not "
        "JSON is a 400 `malformed-body`; JSON that is not a valid call is a 422 "
        "`invalid-input` listing the wrong fields; either way nothing is stored."
    ),
    response_model=RelayAccepted,
    response_model_by_alias=True,
    responses={
        202: {"description": "Accepted: windows applied and notifications stored"},
        **problem_responses(400, 401, 413, 415, 422, 429, 503),
    },
    openapi_extra=_RELAY_OPENAPI,
)
async def relay_notifications(request: Request, tenant: TenantPath) -> RelayAccepted:
    """A call whose signature does not verify counts against its client address's budget of
    failed authentications: over it, the answer is 429 with `Retry-After` instead of 401. A call
    that verifies is never refused for it."""
    return await accept_relay(request.app, request.scope, tenant, await request.body())


async def accept_relay(app: FastAPI, scope: Scope, tenant: str, body: bytes) -> RelayAccepted:
    """What the relay call in ``scope`` with ``body`` did; raises what becomes its problem
    answer. A call that does not verify counts against its address's failed attempts."""
    services = services_of(app)
    intake = services.intake
    headers = Headers(scope=scope)
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    try:
        outcome = await intake.receive_relay(
            tenant,
            method=scope["method"],
            path_with_query=target,
            headers=headers,
            content_type=headers.get("content-type"),
            body=body,
        )
    except BookingCacheError as exc:
        intake.metrics.count_rejected("alt2", exc)
        if isinstance(exc, BadSignature):
            throttle: AuthThrottle = app.state.auth_throttle
            throttle.failed(throttle.client_address(scope), None, now=services.clock.now())
        raise
    return RelayAccepted(
        notifications=outcome.notifications,
        windowsApplied=outcome.windows_applied,
        ignoredMailboxes=outcome.ignored_mailboxes,
    )


RELAY_PATH = re.compile(r"/v1/tenants/(" + TENANT_ID_PATTERN.strip("^$") + ")/notifications")


class RelayEndpoint(BareExchange):
    """The connector relay's signed call as a bare exchange, for the calls that need nothing
    else of the stack: ``ServiceApp`` sends those with a query string (for the app's query
    checks) or an ``Origin`` (for the CORS policy) the full way, to ``relay_notifications``.
    Both answer through ``accept_relay``, and ``tests/intake/test_relay_fast_path.py`` holds
    them to the same answers."""

    route = "/v1/tenants/{tenant}/notifications"

    async def _answer(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        body = await self._body(scope, receive)
        accepted = await accept_relay(self.app, scope, self.tenant, body)
        # As the route's JSON answer is encoded.
        content = json.dumps(
            accepted.model_dump(by_alias=True), ensure_ascii=False, separators=(",", ":")
        )
        await _send(send, 202, content.encode(), request_id, (b"content-type", b"application/json"))
        return 202

    @staticmethod
    def takes(scope: Scope) -> bool:
        """Whether the request needs nothing of the stack but what this exchange does."""
        if scope.get("query_string"):
            return False
        return not any(name == b"origin" for name, _ in scope["headers"])
