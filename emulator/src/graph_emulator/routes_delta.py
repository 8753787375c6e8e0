"""``calendarView/delta``: rounds of pages (``$skiptoken``) ending in a ``$deltatoken``; later
rounds return what changed since, and ``@removed`` for what left the window or was deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.delta import SyncState, decode_token, encode_token, sync_state_not_found
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.pipeline import graph_root, mailbox_access, parse_prefer, view_for
from graph_emulator.routes_events import WINDOW_REQUIRED
from graph_emulator.timezones import parse_query_instant
from graph_emulator.views import render

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState

UNSUPPORTED = ("$filter", "$orderby", "$expand", "$search", "$select", "$top", "$count")


def routes(state: EmulatorState) -> list[Route]:
    async def delta(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="read") as access:
            params = request.query_params
            for option in UNSUPPORTED:
                if option in params:
                    raise bad_request(
                        f"The query option '{option}' is not supported with delta.",
                        code="ErrorInvalidUrlQuery",
                    )
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer, select=False)
            mailbox = access.mailbox
            link_base = f"{graph_root(request)}{request.url.path[5:]}"
            page_size = min(
                prefer.max_page_size or state.config.default_page_size,
                state.config.max_page_size,
            )
            skip_token = params.get("$skiptoken")
            delta_token = params.get("$deltatoken")
            if skip_token is not None:
                info = decode_token(skip_token)
                if info.kind != "skip" or info.mailbox_id != mailbox.id:
                    raise sync_state_not_found()
                # Not discarded: a client may retry a page after a transient failure.
                sync = state.delta.load(info.state_id, mailbox_id=mailbox.id)
            else:
                if delta_token is not None:
                    info = decode_token(delta_token)
                    if info.kind != "delta" or info.mailbox_id != mailbox.id:
                        raise sync_state_not_found()
                    previous = state.delta.load(info.state_id, mailbox_id=mailbox.id)
                    start, end, seen = previous.start, previous.end, previous.seen
                else:
                    start_raw = params.get("startDateTime")
                    end_raw = params.get("endDateTime")
                    if not start_raw or not end_raw:
                        raise GraphError(400, "ErrorInvalidParameter", WINDOW_REQUIRED)
                    start = parse_query_instant(start_raw, "startDateTime")
                    end = parse_query_instant(end_raw, "endDateTime")
                    seen = {}
                instances = state.calendars.instances(mailbox, start, end) if end > start else []
                now_seen = {i.id: i.change_key for i in instances}
                pending: list[dict[str, Any]] = [
                    {"kind": "item", "id": i.id}
                    for i in instances
                    if seen.get(i.id) != i.change_key
                ]
                pending += [
                    {"kind": "removed", "id": gone} for gone in seen if gone not in now_seen
                ]
                sync = SyncState(
                    mailbox_id=mailbox.id,
                    start=start,
                    end=end,
                    created=state.clock.monotonic(),
                    seen=now_seen,
                    pending=pending,
                )
            chunk, rest = sync.pending[:page_size], sync.pending[page_size:]
            values: list[dict[str, Any]] = []
            for entry in chunk:
                if entry["kind"] == "removed":
                    values.append(
                        {
                            "@odata.type": "#microsoft.graph.event",
                            "id": entry["id"],
                            "@removed": {"reason": "deleted"},
                        }
                    )
                    continue
                try:
                    instance = state.calendars.find(mailbox, entry["id"])
                except GraphError:
                    values.append(
                        {
                            "@odata.type": "#microsoft.graph.event",
                            "id": entry["id"],
                            "@removed": {"reason": "deleted"},
                        }
                    )
                    continue
                values.append({"@odata.type": "#microsoft.graph.event"} | render(instance, view))
            following = SyncState(
                mailbox_id=mailbox.id,
                start=sync.start,
                end=sync.end,
                created=state.clock.monotonic(),
                seen=sync.seen,
                pending=rest,
            )
            body: dict[str, Any] = {
                "@odata.context": f"{graph_root(request)}/$metadata#Collection(event)",
                "value": values,
            }
            if rest:
                token = encode_token("skip", state.delta.save(following), following)
                body["@odata.nextLink"] = f"{link_base}?$skiptoken={token}"
            else:
                token = encode_token("delta", state.delta.save(following), following)
                body["@odata.deltaLink"] = f"{link_base}?$deltatoken={token}"
            return JSONResponse(body, headers=prefer.applied())

    return [
        Route("/v1.0/users/{user}/calendarView/delta", delta, methods=["GET"]),
        Route("/v1.0/users/{user}/calendar/calendarView/delta", delta, methods=["GET"]),
    ]
