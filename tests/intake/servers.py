"""A signed test connector for the end-to-end intake tests: the basic-events endpoint of the
service<->connector contract, whose answers the test controls."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bookingcache.clock import SystemClock
from bookingcache.contract.signing import SignatureVerifier
from bookingcache.errors import BadSignature


class TruthConnector:
    """Answers ``GET /v1/calendars/{mailbox}/events`` with ``truth[mailbox]`` after checking
    the contract signature; counts reads and refusals."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.truth: dict[str, list[dict[str, Any]]] = {}
        self.reads = 0
        self.refused = 0
        self._verifier = SignatureVerifier(clock=SystemClock())

    async def _events(self, request: Request) -> JSONResponse:
        raw_path = request.scope["raw_path"].decode("latin-1")
        query = request.scope["query_string"].decode("latin-1")
        target = f"{raw_path}?{query}" if query else raw_path
        try:
            assert self.secret is not None
            self._verifier.verify(
                tenant_id="service",
                secrets=[self.secret],
                method="GET",
                path_with_query=target,
                headers=request.headers,
                body=b"",
            )
        except BadSignature as exc:
            self.refused += 1
            return JSONResponse({"detail": str(exc)}, status_code=401)
        self.reads += 1
        mailbox = request.path_params["mailbox"]
        return JSONResponse(
            {
                "mailbox": mailbox,
                "start": request.query_params["start"],
                "end": request.query_params["end"],
                "events": self.truth.get(mailbox, []),
            }
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/calendars/{mailbox}/events", self._events)])
