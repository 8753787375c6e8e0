"""The service's side of the relay contract, as a small Starlette app for tests: verifies each
call with the ``standardwebhooks`` library itself (not the connector's code), refuses replays,
checks each body against the contract's ``RelayNotification`` schema (422 otherwise, as the
service answers), and records what it accepted. ``down`` makes it answer 503, as a service
outage would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml  # type: ignore[import-untyped]
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_SPEC = yaml.safe_load((Path(__file__).resolve().parents[1] / "openapi.yaml").read_text())
RELAY_SCHEMA = jsonschema_rs.Draft202012Validator(
    {"$ref": "#/components/schemas/RelayNotification", "components": _SPEC["components"]}
)


@dataclass
class Receiver:
    secret: str
    down: bool = False
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    # Bodies that broke the contract's schema, with what was wrong.
    invalid: list[str] = field(default_factory=list)
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
            document = json.loads(body)
            errors = [str(error) for error in RELAY_SCHEMA.iter_errors(document)]
            if errors:
                self.invalid.append("; ".join(errors))
                return JSONResponse({"title": "invalid-input"}, status_code=422)
            self.seen_ids.add(msg_id)
            self.accepted.append({"tenant": request.path_params["tenant"], **document})
            return Response(status_code=202)

        return Starlette(
            routes=[Route("/v1/tenants/{tenant}/notifications", notifications, methods=["POST"])]
        )

    def changes(self) -> list[tuple[str, str]]:
        return [(c["mailbox"], c["changeType"]) for a in self.accepted for c in a["changes"]]
