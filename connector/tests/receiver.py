"""The service's side of the relay contract, as a small Starlette app for tests: verifies each
call with the ``standardwebhooks`` library itself (not the connector's code), refuses replays,
and records what it accepted. ``down`` makes it answer 503, as a service outage would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Receiver:
    secret: str
    down: bool = False
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    seen_ids: set[str] = field(default_factory=set)

    def app(self) -> Starlette:
        async def notifications(request: Request) -> Response:
            if self.down:
                return JSONResponse({"title": "unavailable"}, status_code=503)
            body = await request.body()
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            content = f"{request.method} {target}\n".encode() + body
            try:
                payload = Webhook(self.secret).verify(
                    content, dict(request.headers), json_parse=False
                )
            except WebhookVerificationError as exc:
                self.refused += 1
                return JSONResponse({"title": str(exc)}, status_code=401)
            del payload
            msg_id = request.headers["webhook-id"]
            if msg_id in self.seen_ids:
                self.refused += 1
                return JSONResponse({"title": "replay"}, status_code=401)
            self.seen_ids.add(msg_id)
            import json

            self.accepted.append({"tenant": request.path_params["tenant"], **json.loads(body)})
            return Response(status_code=202)

        return Starlette(
            routes=[Route("/v1/tenants/{tenant}/notifications", notifications, methods=["POST"])]
        )

    def changes(self) -> list[tuple[str, str]]:
        return [(c["mailbox"], c["changeType"]) for a in self.accepted for c in a["changes"]]
