"""Graph-style errors: every failure the emulator answers has Graph's body shape
``{"error": {"code": ..., "message": ..., "innerError": {...}}}`` and Graph's status code."""

from __future__ import annotations

import datetime as dt
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.responses import JSONResponse

# The ids of the Graph request being answered: (request-id, client-request-id). The app sets
# them per request, sends them as headers, and error bodies repeat them, as Graph does.
REQUEST_IDS: ContextVar[tuple[str, str] | None] = ContextVar("graph_request_ids", default=None)


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def to_body(
        self, *, now: dt.datetime | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        current = REQUEST_IDS.get()
        if request_id is not None:
            client_request_id = request_id
        elif current is not None:
            request_id, client_request_id = current
        else:
            request_id = client_request_id = str(uuid.uuid4())
        when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S")
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": when,
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                },
            }
        }

    def to_response(self, *, now: dt.datetime | None = None) -> JSONResponse:
        body = self.to_body(now=now)
        inner = body["error"]["innerError"]
        headers = {
            "request-id": inner["request-id"],
            "client-request-id": inner["client-request-id"],
            **self.headers,
        }
        return JSONResponse(body, status_code=self.status, headers=headers)


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def not_found(message: str, code: str = "ErrorItemNotFound") -> GraphError:
    return GraphError(404, code, message)


def access_denied(
    message: str = "Access is denied. Check credentials and try again.",
) -> GraphError:
    return GraphError(403, "ErrorAccessDenied", message)
