"""The notification endpoints: Graph's webhooks (Alternative 1) and the connector's signed relay
call (Alternative 2). Both answer 202 only after what they accepted is committed to the inbox;
see docs/intake.md."""

from __future__ import annotations

import logging
import re
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from bookingcache.api.deps import TENANT_ID_PATTERN
from bookingcache.api.metrics import HttpMetrics
from bookingcache.api.problems import (
    FieldError,
    ProblemError,
    problem_response,
    problem_responses,
)
from bookingcache.api.request_id import HEADER as REQUEST_ID_HEADER
from bookingcache.api.request_id import SCOPE_KEY as REQUEST_ID_SCOPE_KEY
from bookingcache.api.request_id import fresh_request_id
from bookingcache.bootstrap import Container
from bookingcache.errors import StoreUnavailable
from bookingcache.intake.errors import (
    BadSignature,
    BodyTooLarge,
    MalformedBody,
    NotPersisted,
    UnsupportedMediaType,
)
from bookingcache.intake.metrics import IntakeMetrics
from bookingcache.intake.relay import InvalidRelayCall
from bookingcache.intake.service import MAX_BODY_BYTES, IntakeService, is_json
from bookingcache.store.sql import SqlStore
from bookingcache.sync.queue import JobQueue
from bookingcache.sync.settings import SyncSettings

log = logging.getLogger(__name__)

router = APIRouter(tags=["notifications"])

TenantPath = Annotated[
    str, Path(description="The tenant's id", pattern=TENANT_ID_PATTERN, max_length=63)
]
_RETRY_AFTER_S = "1"
_GRAPH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Validation handshake: the decoded validationToken",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    202: {"description": "Accepted: every authentic notification of the batch is stored"},
    **problem_responses(400, 413, 415, 503),
}


def intake_of(request: Request) -> IntakeService:
    """The process's intake (``StoreUnavailable`` while the service starts or stops)."""
    return intake_of_app(request.app)


def intake_of_app(app: Any) -> IntakeService:
    """The app's intake, built on first use for the running container."""
    state = app.state
    container = getattr(state, "container", None)
    current = getattr(state, "intake", None)
    if (
        container is not None
        and isinstance(current, IntakeService)
        and getattr(state, "intake_for", None) is container
    ):
        return current
    if not isinstance(container, Container):
        raise StoreUnavailable("the service is starting or stopping")
    store = container.store
    if not isinstance(store, SqlStore):
        raise StoreUnavailable("the notification intake needs the SQL store")
    metrics = getattr(state, "intake_metrics", None)
    if not isinstance(metrics, IntakeMetrics):
        metrics = IntakeMetrics(state.metrics_registry)
        state.intake_metrics = metrics
    # The sync engine's queue: appending to it wakes an in-process worker directly.
    queue = container.queue
    if queue is None:
        coalesce_s = SyncSettings().coalesce_ms / 1000
        queue = JobQueue(store, clock=container.clock, coalesce_s=coalesce_s)
    service = IntakeService(store=store, queue=queue, clock=container.clock, metrics=metrics)
    service.on_unknown_subscription = getattr(state, "on_unknown_subscription", None)
    state.intake = service
    state.intake_for = container
    return service


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body of a request whose body is still unread (see ``receive_body``)."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit)


def _problem(exc: Exception, *, via: str, metrics: IntakeMetrics) -> ProblemError:
    if isinstance(exc, BodyTooLarge):
        status, slug, reason = 413, "payload-too-large", "too_large"
    elif isinstance(exc, UnsupportedMediaType):
        status, slug, reason = 415, "unsupported-media-type", "media_type"
    elif isinstance(exc, BadSignature):
        status, slug, reason = 401, "bad-signature", "signature"
    elif isinstance(exc, InvalidRelayCall):
        metrics.rejected.labels(via, "invalid").inc()
        return ProblemError(
            422,
            "invalid-input",
            str(exc),
            field_errors=[FieldError(field=f, message=m, type=t) for f, m, t in exc.errors],
        )
    elif isinstance(exc, MalformedBody):
        status, slug, reason = 400, "malformed-body", "malformed"
    else:
        assert isinstance(exc, NotPersisted)
        return ProblemError(503, "not-persisted", str(exc), headers={"Retry-After": _RETRY_AFTER_S})
    metrics.rejected.labels(via, reason).inc()
    return ProblemError(status, slug, str(exc))


class GraphWebhook:
    """Graph's POSTs to either webhook URL, served as a bare ASGI exchange: the handshake,
    202, or a problem. ``ServiceApp`` hands matching requests here before the middleware
    stack and the router (Graph judges an endpoint by its latency and throughput, and these
    requests need none of that machinery); the documented FastAPI routes below answer with
    the same object, so both ways in behave identically.

    What the middleware stack gives other requests is done here too: the request id header,
    the body limit (413 from the declared length, and while reading) and the HTTP metrics."""

    def __init__(self, app: Any, *, kind: str, tenant: str) -> None:
        self.app = app
        self.kind = kind
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        content_type = declared = given_id = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
            elif name == REQUEST_ID_HEADER:
                given_id = value
        request_id = fresh_request_id(given_id)
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        try:
            status = await self._answer(scope, receive, send, content_type, declared, request_id)
        except Exception:  # the request boundary, as the app's unexpected-error handler
            log.exception("unhandled error on POST %s [%s]", scope["path"], request_id)
            status = await _send_problem(
                scope, send, request_id, 500, "internal-error", "the service failed to answer"
            )
        metrics = getattr(self.app.state, "http_metrics", None)
        if isinstance(metrics, HttpMetrics):
            metrics.observe(
                "POST", f"/graph/{self.kind}/{{tenant}}", status, time.perf_counter() - started
            )

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        content_type: bytes | None,
        declared: bytes | None,
        request_id: str,
    ) -> int:
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
        try:
            intake = intake_of_app(self.app)
        except StoreUnavailable as exc:
            return await _send_problem(scope, send, request_id, 503, "store-unavailable", str(exc))
        try:
            body = await receive_body(
                receive, declared.decode("latin-1") if declared else None, MAX_BODY_BYTES
            )
            if not is_json(content_type.decode("latin-1") if content_type else None):
                raise UnsupportedMediaType("notifications must be sent as application/json")
            await intake.receive_graph(self.tenant, body)
        except ProblemError as exc:  # a Content-Length that is not a number
            return await _send_problem(scope, send, request_id, exc.status, exc.slug, exc.detail)
        except (BodyTooLarge, UnsupportedMediaType, MalformedBody, NotPersisted) as exc:
            problem = _problem(exc, via="alt1", metrics=intake.metrics)
            return await _send_problem(
                scope,
                send,
                request_id,
                problem.status,
                problem.slug,
                problem.detail,
                problem.headers,
            )
        except StoreUnavailable as exc:
            # The subscription lookup could not reach the database: Graph must retry.
            return await _send_problem(
                scope,
                send,
                request_id,
                503,
                "store-unavailable",
                str(exc),
                {"Retry-After": _RETRY_AFTER_S},
            )
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


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body, refused with 413 (``BodyTooLarge``) as soon as it is known to exceed
    ``limit``: from the declared Content-Length, and by counting while reading (a chunked or
    lying sender); a Content-Length that is not a number is a 400."""
    if declared is not None:
        if not declared.isdigit():
            raise ProblemError(400, "bad-request", "Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
                (REQUEST_ID_HEADER, request_id.encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_problem(
    scope: Scope,
    send: Send,
    request_id: str,
    status: int,
    slug: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
) -> int:
    response = problem_response(Request(scope), status, slug=slug, detail=detail, headers=headers)
    await _send(
        send,
        status,
        bytes(response.body),
        request_id,
        *((name, value) for name, value in response.raw_headers if name != b"content-length"),
    )
    return status


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
)
async def graph_notifications(request: Request, tenant: TenantPath) -> Response:
    return _Handover(GraphWebhook(request.app, kind="notifications", tenant=tenant))


@router.post(
    "/graph/lifecycle/{tenant}",
    status_code=202,
    summary="Graph lifecycle notifications (Alternative 1) and the validation handshake",
    response_class=Response,
    responses=_GRAPH_RESPONSES,
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
    response_model=RelayAccepted,
    response_model_by_alias=True,
    responses={
        202: {"description": "Accepted: windows applied and notifications stored"},
        **problem_responses(400, 401, 413, 415, 422, 503),
    },
)
async def relay_notifications(request: Request, tenant: TenantPath) -> RelayAccepted:
    intake = intake_of(request)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    try:
        body = await read_body(request)
        outcome = await intake.receive_relay(
            tenant,
            method=request.method,
            path_with_query=target,
            headers=request.headers,
            content_type=request.headers.get("content-type"),
            body=body,
        )
    except (
        BodyTooLarge,
        UnsupportedMediaType,
        MalformedBody,
        BadSignature,
        NotPersisted,
    ) as exc:
        raise _problem(exc, via="alt2", metrics=intake.metrics) from exc
    return RelayAccepted(
        notifications=outcome.notifications,
        windowsApplied=outcome.windows_applied,
        ignoredMailboxes=outcome.ignored_mailboxes,
    )
