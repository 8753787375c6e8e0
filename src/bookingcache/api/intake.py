"""The notification endpoints: Graph's webhooks (Alternative 1) and the connector's signed relay
call (Alternative 2). Both answer 202 only after what they accepted is committed to the inbox;
see docs/intake.md."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bookingcache.api.deps import TENANT_ID_PATTERN, get_container
from bookingcache.api.problems import (
    FieldError,
    ProblemError,
    problem_response,
    problem_responses,
)
from bookingcache.errors import StoreUnavailable
from bookingcache.intake.errors import (
    BadSignature,
    BodyTooLarge,
    MalformedBody,
    NotPersisted,
    UnknownMailbox,
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
    """The process's intake, built on first use for the running container."""
    container = get_container(request)
    state = request.app.state
    current = getattr(state, "intake", None)
    if isinstance(current, IntakeService) and getattr(state, "intake_for", None) is container:
        return current
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
    """The body, refused with 413 as soon as it is known to exceed ``limit``: from the declared
    Content-Length, and by counting while reading (a chunked or lying sender)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProblemError(400, "bad-request", "Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(exc: Exception, *, via: str, metrics: IntakeMetrics) -> ProblemError:
    if isinstance(exc, BodyTooLarge):
        status, slug, reason = 413, "payload-too-large", "too_large"
    elif isinstance(exc, UnsupportedMediaType):
        status, slug, reason = 415, "unsupported-media-type", "media_type"
    elif isinstance(exc, BadSignature):
        status, slug, reason = 401, "bad-signature", "signature"
    elif isinstance(exc, UnknownMailbox):
        metrics.rejected.labels(via, "unknown_mailbox").inc()
        return ProblemError(
            422,
            "unknown-mailbox",
            str(exc),
            field_errors=[
                FieldError(field="mailbox", message=f"{mailbox!r} is not a calendar of this tenant")
                for mailbox in exc.mailboxes[:100]
            ],
        )
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


async def answer_graph(request: Request, tenant: str) -> Response:
    """Graph's POST to either webhook URL, answered: the handshake, 202, or a problem."""
    token = request.query_params.get("validationToken")
    if token is not None:
        # Graph's handshake: the decoded token, verbatim, as plain text, within 10 s.
        return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})
    try:
        intake = intake_of(request)
    except StoreUnavailable as exc:
        return problem_response(request, 503, slug="store-unavailable", detail=str(exc))
    try:
        body = await read_body(request)
        if not is_json(request.headers.get("content-type")):
            raise UnsupportedMediaType("notifications must be sent as application/json")
        await intake.receive_graph(tenant, body)
    except (BodyTooLarge, UnsupportedMediaType, MalformedBody, NotPersisted) as exc:
        problem = _problem(exc, via="alt1", metrics=intake.metrics)
        return problem_response(
            request,
            problem.status,
            slug=problem.slug,
            detail=problem.detail,
            field_errors=problem.field_errors,
            headers=problem.headers,
        )
    except StoreUnavailable as exc:
        # The subscription lookup could not reach the database: Graph must retry.
        return problem_response(
            request,
            503,
            slug="store-unavailable",
            detail=str(exc),
            headers={"Retry-After": _RETRY_AFTER_S},
        )
    return Response(status_code=202)


@dataclass(frozen=True, slots=True)
class _RouteLabel:
    """What the HTTP metrics read from ``scope["route"]``."""

    path: str

    @property
    def path_format(self) -> str:
        return self.path


_FAST_PATH = re.compile(r"/graph/(notifications|lifecycle)/([a-z0-9][a-z0-9-]{0,62})")


class GraphWebhookFastPath:
    """ASGI middleware answering Graph's webhook POSTs before the router and its dependency
    machinery: Graph judges an endpoint by its latency and throughput, and these requests need
    none of it. Other requests (and malformed webhook paths) pass through; the FastAPI routes
    below document the same endpoints and answer identically when called directly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _FAST_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _RouteLabel(f"/graph/{match[1]}/{{tenant}}")
        request = Request(scope, receive)
        try:
            response = await answer_graph(request, match[2])
        except ProblemError as exc:
            response = problem_response(
                request, exc.status, slug=exc.slug, detail=exc.detail, headers=exc.headers
            )
        except StarletteHTTPException as exc:  # the body limit cut the body off
            detail = exc.detail if isinstance(exc.detail, str) else None
            response = problem_response(request, exc.status_code, detail=detail)
        except Exception:  # the request boundary, as the app's unexpected-error handler
            log.exception("unhandled error on POST %s", scope["path"])
            response = problem_response(
                request, 500, slug="internal-error", detail="the service failed to answer"
            )
        await response(scope, receive, send)


@router.post(
    "/graph/notifications/{tenant}",
    status_code=202,
    summary="Graph change notifications (Alternative 1) and the validation handshake",
    response_class=Response,
    responses=_GRAPH_RESPONSES,
)
async def graph_notifications(request: Request, tenant: TenantPath) -> Response:
    return await answer_graph(request, tenant)


@router.post(
    "/graph/lifecycle/{tenant}",
    status_code=202,
    summary="Graph lifecycle notifications (Alternative 1) and the validation handshake",
    response_class=Response,
    responses=_GRAPH_RESPONSES,
)
async def graph_lifecycle(request: Request, tenant: TenantPath) -> Response:
    return await answer_graph(request, tenant)


@router.post(
    "/v1/tenants/{tenant}/notifications",
    status_code=202,
    summary="The connector relay's signed notification call (Alternative 2)",
    response_class=Response,
    responses={
        202: {"description": "Accepted: windows applied and notifications stored"},
        **problem_responses(400, 401, 413, 415, 422, 503),
    },
)
async def relay_notifications(request: Request, tenant: TenantPath) -> Response:
    intake = intake_of(request)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    try:
        body = await read_body(request)
        await intake.receive_relay(
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
        UnknownMailbox,
        NotPersisted,
    ) as exc:
        raise _problem(exc, via="alt2", metrics=intake.metrics) from exc
    return Response(status_code=202)
