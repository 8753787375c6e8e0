"""The connector's HTTP surface, independent of the host (ASGI or Azure Functions).

A host turns its request into :class:`Request`, awaits :meth:`Handlers.handle`, and writes the
:class:`Response` back. Errors are mapped to ``application/problem+json`` here, in one place.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

from .clock import Clock, parse_instant, to_graph_utc
from .errors import BadRequest, ConnectorError, GraphError, SignatureError
from .events import MalformedEvent, TitlePolicy, basic_event
from .graph import GraphClient
from .loops import Loops
from .metrics import age_s
from .relay import Relay
from .signing import Verifier, path_with_query
from .store import StateStore
from .subscriptions import Desired, SubscriptionManager

log = logging.getLogger(__name__)

EVENTS_PATH = re.compile(r"^/v1/calendars/(?P<mailbox>[^/]+)/events$")
MAX_WINDOW = timedelta(days=62)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.query, keep_blank_values=True).items()}


# Every answer is JSON or text for a program, never a page: nothing may load, frame or sniff it.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_CREDENTIALS = ("authorization", "webhook-signature")


def security_headers(*, https: bool, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers every answer carries: ``SECURITY_HEADERS``; ``Strict-Transport-Security``
    when the request came over https; ``Cache-Control: no-store`` when it carried a signature
    or a token (answers with events or subscriptions must not be kept by a cache)."""
    extra = list(SECURITY_HEADERS)
    if https:
        extra.append(("Strict-Transport-Security", "max-age=31536000"))
    if any(name.lower() in _CREDENTIALS for name in headers):
        extra.append(("Cache-Control", "no-store"))
    return extra


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        return cls(status, json.dumps(data).encode())

    @classmethod
    def problem(cls, status: int, title: str, detail: str) -> Response:
        body = json.dumps(
            {"type": "about:blank", "title": title, "status": status, "detail": detail}
        )
        return cls(status, body.encode(), "application/problem+json")


class Handlers:
    def __init__(
        self,
        *,
        clock: Clock,
        verifier: Verifier | None,
        graph: GraphClient,
        subscriptions: SubscriptionManager,
        relay: Relay | None,
        titles: TitlePolicy = TitlePolicy.SEND,
        loops: Loops | None = None,
        store: StateStore | None = None,
    ) -> None:
        self._clock = clock
        self._loops = loops or Loops()
        self._store = store
        self._titles = titles
        self._verifier = verifier
        self._graph = graph
        self._subscriptions = subscriptions
        self._relay = relay

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except SignatureError as exc:
            return Response.problem(401, "Unauthorized", str(exc))
        except BadRequest as exc:
            return Response.problem(400, "Bad Request", str(exc))
        except GraphError as exc:
            status = exc.status if exc.status in (403, 404) else 502
            return Response.problem(status, "Graph error", str(exc))
        except ConnectorError as exc:
            return Response.problem(502, "Connector error", str(exc))
        except Exception:  # a request boundary: log it, answer, keep serving
            log.exception("unhandled error on %s %s", request.method, request.path)
            return Response.problem(500, "Internal Server Error", "see the connector's log")

    async def _route(self, request: Request) -> Response:
        method, path = request.method.upper(), request.path
        if path == "/healthz" and method == "GET":
            return self.health()
        if path in ("/graph/notifications", "/graph/lifecycle") and method == "POST":
            return self.graph_post(
                request, "change" if path.endswith("notifications") else "lifecycle"
            )
        if path == "/v1/subscriptions" and method in ("PUT", "PATCH"):
            self._verify(request)
            try:
                body = json.loads(request.body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest("body is not JSON") from exc
            # PUT converges to exactly these mailboxes; PATCH only touches the ones it names.
            rows = await self._subscriptions.converge(
                Desired.from_json(body), prune=method == "PUT"
            )
            return Response.json(200, {"subscriptions": rows})
        match = EVENTS_PATH.match(path)
        if match and method == "GET":
            self._verify(request)
            return await self._events(unquote(match.group("mailbox")), request.params())
        if (
            path in ("/healthz", "/graph/notifications", "/graph/lifecycle", "/v1/subscriptions")
            or match
        ):
            return Response.problem(405, "Method Not Allowed", f"{method} is not allowed here")
        return Response.problem(404, "Not Found", f"no route for {path}")

    def health(self) -> Response:
        """200 while every loop its host started runs and none is failing; otherwise 503,
        naming the loops in ``unhealthy``. Each loop's state, and the relay's backlog."""
        unhealthy = self._loops.unhealthy()
        body: dict[str, Any] = {
            "status": "unhealthy" if unhealthy else "ok",
            "loops": {name: st.to_json() for name, st in sorted(self._loops.statuses.items())},
        }
        if unhealthy:
            body["unhealthy"] = unhealthy
        if self._relay is not None and self._store is not None:
            body["relay"] = {
                "backlog": self._store.pending_count(),
                "oldestAgeSeconds": round(
                    age_s(self._store.oldest_pending_at(), self._clock.now()), 3
                ),
            }
        return Response.json(503 if unhealthy else 200, body)

    def _verify(self, request: Request) -> None:
        if self._verifier is None:
            raise SignatureError("no webhook secret configured: signed endpoints are disabled")
        self._verifier.verify(
            request.method,
            path_with_query(request.path, request.query),
            request.headers,
            request.body,
        )

    def graph_post(self, request: Request, kind: str) -> Response:
        """Graph's side: the validation handshake, or a batch to accept durably."""
        token = request.params().get("validationToken")
        if token is not None:
            return Response(200, token.encode(), "text/plain; charset=utf-8")
        if self._relay is None:
            return Response.problem(503, "Relay not configured", "set CONNECTOR_SERVICE_URL")
        self._relay.receive(kind, request.body)
        return Response(202)

    async def _events(self, mailbox: str, params: dict[str, str]) -> Response:
        if "@" not in mailbox:
            raise BadRequest("mailbox must be an address")
        try:
            start, end = parse_instant(params["start"]), parse_instant(params["end"])
        except (KeyError, ValueError) as exc:
            raise BadRequest("start and end are required ISO 8601 instants") from exc
        if not start < end or end - start > MAX_WINDOW:
            raise BadRequest("need start < end and a window of at most 62 days")
        raw = await self._graph.calendar_view(mailbox, start, end)
        try:
            events = [basic_event(e, self._titles).to_json() for e in raw]
        except MalformedEvent as exc:
            raise GraphError(502, "MalformedEvent", str(exc)) from exc
        return Response.json(
            200,
            {
                "mailbox": mailbox,
                "start": to_graph_utc(start),
                "end": to_graph_utc(end),
                "events": events,
            },
        )
