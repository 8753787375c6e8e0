"""RFC 9457 problem details: every 4xx and 5xx the API answers is ``application/problem+json``.

This is the one place where the service's error tree (``bookingcache.errors``) meets HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from bookingcache import errors
from bookingcache.api.request_id import HEADER, request_id_of
from bookingcache.intake.relay import InvalidRelayCall

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:bookingcache:problem:"
# RFC 9457's type of a problem with no meaning beyond its HTTP status: only for a status the
# framework itself raised and no entry of ``PROBLEM_TYPES`` describes.
ABOUT_BLANK = "about:blank"

# Every problem type the service answers, after ``TYPE_PREFIX``, with its one status. The one
# list: ``ProblemError`` and the error mapping below refuse any other, and the tables of
# docs/api.md and docs/intake.md are checked against it (tests/api/test_problem_types.py).
PROBLEM_TYPES: dict[str, int] = {
    "malformed-body": 400,
    "bad-request": 400,
    "unauthorized": 401,
    "bad-signature": 401,
    "bad-stream-ticket": 401,
    "forbidden": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "request-timeout": 408,
    "conflict": 409,
    "payload-too-large": 413,
    "uri-too-long": 414,
    "unsupported-media-type": 415,
    "invalid-input": 422,
    "invalid-window": 422,
    "invalid-import": 422,
    "too-many-failed-attempts": 429,
    "header-fields-too-large": 431,
    "internal-error": 500,
    "upstream-error": 502,
    "store-unavailable": 503,
    "not-persisted": 503,
    "upstream-throttled": 503,
}


def registered(status: int, slug: str) -> str:
    """``slug``, if ``PROBLEM_TYPES`` has it with ``status`` (``ValueError`` otherwise)."""
    if PROBLEM_TYPES.get(slug) != status:
        raise ValueError(f"problem type {slug!r} with status {status} is not in PROBLEM_TYPES")
    return slug


class FieldError(BaseModel):
    """One thing wrong with the request."""

    field: str = Field(description="where: e.g. body.mailbox, query.start, or a CSV column")
    message: str
    type: str | None = Field(default=None, description="machine-readable error kind")
    row: int | None = Field(
        default=None, description="for imports: the row number (CSV: the line, header is 1)"
    )


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raised by endpoints for a problem that carries field errors (e.g. a rejected import)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        field_errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = registered(status, slug)
        self.detail = detail
        self.field_errors = list(field_errors)
        self.headers = headers


# Ordered most specific first: the first matching class decides.
_ERROR_MAP: tuple[tuple[type[errors.BookingCacheError], int, str], ...] = (
    (errors.InvalidWindow, 422, "invalid-window"),
    (errors.BodyTooLarge, 413, "payload-too-large"),
    (errors.UnsupportedMediaType, 415, "unsupported-media-type"),
    (InvalidRelayCall, 422, "invalid-input"),
    (errors.MalformedBody, 400, "malformed-body"),
    (errors.InvalidInput, 422, "invalid-input"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.BadSignature, 401, "bad-signature"),
    (errors.BadTicket, 401, "bad-stream-ticket"),
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.TooManyFailedAttempts, 429, "too-many-failed-attempts"),
    (errors.NotPersisted, 503, "not-persisted"),
    (errors.StoreUnavailable, 503, "store-unavailable"),
    (errors.Throttled, 503, "upstream-throttled"),
    (errors.UpstreamError, 502, "upstream-error"),
)
for _cls, _status, _slug in _ERROR_MAP:
    registered(_status, _slug)
# A sender told 503 for a database that failed may send again after this many seconds.
STORE_RETRY_AFTER_S = "1"

# The type of an ``HTTPException`` the framework raised, by its status (the router's 404 and
# 405, the body limit's 413, a form body FastAPI cannot parse); any other is ``about:blank``.
_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    500: "internal-error",
}
for _status, _slug in _HTTP_SLUGS.items():
    registered(_status, _slug)


def problem_response(
    request: Request,
    status: int,
    *,
    slug: str | None = None,
    detail: str | None = None,
    field_errors: Sequence[FieldError] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    if slug is not None:
        problem_type = TYPE_PREFIX + registered(status, slug)
    elif status in _HTTP_SLUGS:
        problem_type = TYPE_PREFIX + _HTTP_SLUGS[status]
    else:
        problem_type = ABOUT_BLANK
    body = Problem(
        type=problem_type,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=list(field_errors) or None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def status_of(exc: errors.BookingCacheError) -> tuple[int, str]:
    for cls, status, slug in _ERROR_MAP:
        if isinstance(exc, cls):
            return status, slug
    return 500, "internal-error"


def _field_name(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def validation_errors(raw: Sequence[Any]) -> list[FieldError]:
    result: list[FieldError] = []
    for item in raw:
        if isinstance(item, dict):
            result.append(
                FieldError(
                    field=_field_name(item.get("loc", ())),
                    message=str(item.get("msg", "invalid")),
                    type=str(item.get("type")) if item.get("type") else None,
                )
            )
    return result


def response_of(request: Request, problem: ProblemError) -> JSONResponse:
    return problem_response(
        request,
        problem.status,
        slug=problem.slug,
        detail=problem.detail,
        field_errors=problem.field_errors,
        headers=problem.headers,
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return response_of(request, exc)


def problem_of(exc: errors.BookingCacheError) -> ProblemError:
    """The problem answering one of the service's errors: status, type, detail, headers
    (``WWW-Authenticate`` for a 401, ``Retry-After`` where the sender should retry) and, for a
    relay call, its field errors. The one mapping from the error tree to HTTP."""
    status, slug = status_of(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, errors.TooManyFailedAttempts):
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    elif isinstance(exc, errors.Throttled) and exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    elif isinstance(exc, errors.StoreUnavailable):
        headers["Retry-After"] = STORE_RETRY_AFTER_S
    field_errors: list[FieldError] = []
    if isinstance(exc, InvalidRelayCall):
        field_errors = [FieldError(field=f, message=m, type=k) for f, m, k in exc.errors]
    # What an upstream sent may be anything its URL points at: only the class of failure.
    detail = (
        f"an upstream failed: {exc.public}" if isinstance(exc, errors.UpstreamError) else str(exc)
    )
    return ProblemError(status, slug, detail, field_errors=field_errors, headers=headers or None)


def unexpected_problem(request_id: str | None) -> ProblemError:
    """The 500 of an error nobody expected (logged by the caller with its request id)."""
    detail = "the service failed to answer this request"
    if request_id:
        detail += f"; quote request id {request_id} to the operator"
    return ProblemError(500, "internal-error", detail)


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.BookingCacheError)
    problem = problem_of(exc)
    if problem.status >= 500:
        log.warning(
            "%s %s answered %d: %s",
            request.method,
            request.url.path,
            problem.status,
            exc,
            extra={"request_id": request_id_of(request.scope)},
        )
    return await _on_problem(request, problem)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    field_errors = validation_errors(exc.errors())
    detail = "; ".join(f"{e.field}: {e.message}" for e in field_errors[:5]) or "invalid request"
    return problem_response(
        request, 422, slug="invalid-input", detail=detail, field_errors=field_errors
    )


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        request, exc.status_code, detail=detail, headers=dict(exc.headers or {}) or None
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_id_of(request.scope)
    log.exception(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        extra={"request_id": request_id},
    )
    response = await _on_problem(request, unexpected_problem(request_id))
    # This answer leaves from the outermost layer, around the one that adds the request id to
    # every other answer.
    if request_id is not None:
        response.headers[HEADER.decode("ascii")] = request_id
    return response


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(errors.BookingCacheError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem answers."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
