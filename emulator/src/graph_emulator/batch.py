"""JSON batching: ``POST /v1.0/$batch`` with up to 20 requests, run through the same app (so
every member is authenticated and throttled on its own), at most 4 at a time as Outlook does,
``dependsOn`` ordering with ``424 Failed Dependency`` after a failed predecessor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from graph_emulator.auth import authenticate
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.pipeline import read_json

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState

_FORWARDED = ("authorization", "prefer", "client-request-id")


def _member_error(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "status": status,
        "headers": {"Content-Type": "application/json"},
        "body": GraphError(status, code, message).to_body(),
    }


async def _call(
    app: ASGIApp,
    outer: Request,
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    if not path.lower().startswith("/v1.0/"):
        path = "/v1.0" + path
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": outer.url.scheme,
        "server": (outer.url.hostname or "127.0.0.1", outer.url.port or 443),
        "client": outer.client and (outer.client.host, outer.client.port),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": parts.query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    status = 500
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for key, value in message.get("headers", []):
                response_headers[key.decode().title()] = value.decode()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    response_headers.pop("Content-Length", None)
    return status, response_headers, b"".join(chunks)


def routes(state: EmulatorState, app: Callable[[], ASGIApp]) -> list[Route]:
    config = state.config

    def parse_members(body: dict[str, Any]) -> list[dict[str, Any]]:
        members = body.get("requests")
        if not isinstance(members, list) or not members:
            raise bad_request("Invalid batch payload format.", "BadRequest")
        if len(members) > config.batch_max_requests:
            raise bad_request(
                f"The batch request contains more than the maximum of "
                f"{config.batch_max_requests} requests.",
                "BadRequest",
            )
        ids: set[str] = set()
        for member in members:
            if not isinstance(member, dict) or not member.get("id") or not member.get("url"):
                raise bad_request("Each batch request needs an 'id', a 'method' and a 'url'.")
            member_id = str(member["id"])
            if member_id in ids:
                raise bad_request(f"Request ids must be unique: '{member_id}' is repeated.")
            ids.add(member_id)
        for member in members:
            depends = member.get("dependsOn") or []
            if not isinstance(depends, list) or any(str(d) not in ids for d in depends):
                raise bad_request(
                    f"Request '{member['id']}' depends on a request that is not in the batch."
                )
        _check_acyclic(members)
        return members

    async def run_batch(request: Request) -> Response:
        await authenticate(request, state, count=False)
        members = parse_members(await read_json(request))
        limit = asyncio.Semaphore(config.batch_parallelism)
        done: dict[str, asyncio.Event] = {str(m["id"]): asyncio.Event() for m in members}
        results: dict[str, dict[str, Any]] = {}
        forwarded = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}

        async def run(member: dict[str, Any]) -> None:
            member_id = str(member["id"])
            try:
                depends = [str(d) for d in member.get("dependsOn") or []]
                for dep in depends:
                    await done[dep].wait()
                if any(not 200 <= results[d]["status"] < 300 for d in depends):
                    results[member_id] = _member_error(424, "FailedDependency", "Failed dependency")
                    return
                async with limit:
                    results[member_id] = await execute(request, member, forwarded)
            finally:
                done[member_id].set()

        await asyncio.gather(*(run(m) for m in members))
        return JSONResponse(
            {"responses": [{"id": str(m["id"])} | results[str(m["id"])] for m in members]}
        )

    async def execute(
        request: Request, member: dict[str, Any], forwarded: dict[str, str]
    ) -> dict[str, Any]:
        method = str(member.get("method") or "GET").upper()
        headers = dict(forwarded)
        member_headers = member.get("headers") or {}
        if isinstance(member_headers, dict):
            headers.update({str(k): str(v) for k, v in member_headers.items()})
        payload = b""
        if member.get("body") is not None:
            if not any(k.lower() == "content-type" for k in headers):
                return _member_error(
                    400, "BadRequest", "A Content-Type header is required for a request body."
                )
            payload = json.dumps(member["body"]).encode()
        status, response_headers, raw = await _call(
            app(), request, method=method, url=str(member["url"]), headers=headers, body=payload
        )
        result: dict[str, Any] = {"status": status, "headers": response_headers}
        if raw:
            try:
                result["body"] = json.loads(raw)
            except ValueError:
                result["body"] = raw.decode(errors="replace")
        return result

    return [Route("/v1.0/$batch", run_batch, methods=["POST"])]


def _check_acyclic(members: list[dict[str, Any]]) -> None:
    graph = {str(m["id"]): [str(d) for d in m.get("dependsOn") or []] for m in members}
    visiting: set[str] = set()
    finished: set[str] = set()

    def visit(node: str) -> None:
        if node in finished:
            return
        if node in visiting:
            raise bad_request("The dependsOn chain of the batch contains a cycle.")
        visiting.add(node)
        for dep in graph[node]:
            visit(dep)
        visiting.discard(node)
        finished.add(node)

    for node in graph:
        visit(node)
