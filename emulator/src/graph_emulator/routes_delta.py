"""``calendarView/delta``: rounds of pages (``$skiptoken``) ending in a ``$deltatoken``; later
rounds return what changed since, and ``@removed`` for what left the window or was deleted."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.delta import SyncState, decode_token, encode_token, sync_state_not_found
from graph_emulator.directory import Mailbox
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.ids import parse_occurrence_id
from graph_emulator.pipeline import graph_root, mailbox_access, parse_prefer, view_for
from graph_emulator.routes_events import query_window
from graph_emulator.views import View, render

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState

# What Graph sends for a plain occurrence in a delta round (no subject, organizer, ...).
BARE_OCCURRENCE = ("@odata.type", "@odata.etag", "id", "seriesMasterId", "type", "start", "end")
UNSUPPORTED = ("$filter", "$orderby", "$expand", "$search", "$select", "$top", "$count")


def _removed(item_id: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": item_id,
        "@removed": {"reason": "deleted"},
    }


def _round(
    state: EmulatorState,
    mailbox: Mailbox,
    start: dt.datetime,
    end: dt.datetime,
    seen: dict[str, str],
) -> tuple[list[list[dict[str, Any]]], dict[str, str]]:
    """What a delta round reports, grouped by series, and what the client holds afterwards.

    Series masters are listed (with their own, first-occurrence times) next to their
    occurrences, which Graph sends bare; a cancelled occurrence is not reported as removed
    unless configured (the master arrives changed instead).
    """
    instances = state.calendars.instances(mailbox, start, end) if end > start else []
    grouped: dict[str, list[tuple[str, str, str]]] = {}
    for instance in instances:
        key = instance.series_master_id or instance.id
        group = grouped.setdefault(key, [])
        if instance.series_master_id is not None and not group:
            group.append((instance.event.id, instance.event.change_key, "item"))
        kind = "bare" if instance.type == "occurrence" else "item"
        group.append((instance.id, instance.change_key, kind))
    now_seen = {item_id: key for group in grouped.values() for item_id, key, _ in group}
    groups = [
        [{"kind": kind, "id": item_id} for item_id, key, kind in group if seen.get(item_id) != key]
        for group in grouped.values()
    ]
    for gone in seen:
        if gone in now_seen:
            continue
        parsed = parse_occurrence_id(gone)
        if (
            parsed is not None
            and parsed[0] in now_seen
            and not state.config.delta_reports_cancelled_occurrences
        ):
            continue
        groups.append([{"kind": "removed", "id": gone}])
    return [g for g in groups if g], now_seen


def _entry(
    state: EmulatorState, mailbox: Mailbox, entry: dict[str, Any], view: View
) -> dict[str, Any]:
    if entry["kind"] == "removed":
        return _removed(entry["id"])
    try:
        instance = state.calendars.find(mailbox, entry["id"])
    except GraphError:
        return _removed(entry["id"])
    data = {"@odata.type": "#microsoft.graph.event"} | render(instance, view)
    if entry["kind"] == "bare":
        data = {k: data[k] for k in BARE_OCCURRENCE}
    return data


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
                    start, end = query_window(params)
                    seen = {}
                groups, now_seen = _round(state, mailbox, start, end, seen)
                sync = SyncState(
                    mailbox_id=mailbox.id,
                    start=start,
                    end=end,
                    created=state.clock.monotonic(),
                    seen=now_seen,
                    pending=groups,
                )
            # A series (master, occurrences, exceptions) is never split across pages.
            chunk: list[list[dict[str, Any]]] = []
            taken = 0
            for group in sync.pending:
                if chunk and taken + len(group) > page_size:
                    break
                chunk.append(group)
                taken += len(group)
            rest = sync.pending[len(chunk) :]
            values = [_entry(state, mailbox, entry, view) for group in chunk for entry in group]
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
