"""Events CRUD on ``/users/{id}/events`` and ``/users/{id}/calendar/events``, and
``calendarView`` with recurrence expansion, ``$select``, ``$top``, paging and ``Prefer``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.errors import GraphError
from graph_emulator.expansion import Instance, as_instance
from graph_emulator.pipeline import (
    check_options,
    context_user,
    graph_root,
    int_option,
    mailbox_access,
    parse_prefer,
    read_json,
    view_for,
)
from graph_emulator.timezones import parse_query_instant
from graph_emulator.views import View, render

if TYPE_CHECKING:
    from graph_emulator.config import EmulatorConfig
    from graph_emulator.state import EmulatorState

WINDOW_REQUIRED = (
    "This request requires a time window specified by the query string parameters "
    "StartDateTime and EndDateTime."
)

# calendarView does not return these when they are $select-ed; Graph documents them as not
# selectable there.
NOT_SELECTABLE_IN_VIEW = frozenset({"createdDateTime", "lastModifiedDateTime"})


def query_window(params: Mapping[str, str]) -> tuple[dt.datetime, dt.datetime]:
    """The ``startDateTime``/``endDateTime`` window that calendarView, instances and delta need."""
    # Graph reads these names case-insensitively (Microsoft's own examples write
    # ``startdatetime``); the first of each wins.
    found: dict[str, str] = {}
    for key, value in params.items():
        found.setdefault(key.lower(), value)
    start_raw = found.get("startdatetime")
    end_raw = found.get("enddatetime")
    if not start_raw or not end_raw:
        raise GraphError(400, "ErrorInvalidParameter", WINDOW_REQUIRED)
    return (
        parse_query_instant(start_raw, "startDateTime"),
        parse_query_instant(end_raw, "endDateTime"),
    )


def page_size(request: Request, config: EmulatorConfig, preferred: int | None) -> int:
    # Graph accepts any positive $top but never pages more than 1,000 items.
    top = int_option(request, "$top", low=1, high=2**31 - 1)
    if top is not None:
        return min(top, config.max_page_size)
    if preferred is not None:
        return min(preferred, config.max_page_size)
    return config.default_page_size


def page_response(
    request: Request,
    instances: list[Instance],
    view: View,
    *,
    page_size: int,
    context: str,
    headers: dict[str, str],
) -> Response:
    """One page of ``instances`` from ``$skip`` on, with Graph's ``@odata.nextLink``."""
    skip = int_option(request, "$skip", low=0, high=10**9) or 0
    chunk = instances[skip : skip + page_size]
    body: dict[str, Any] = {
        "@odata.context": context,
        "value": [render(i, view) for i in chunk],
    }
    if skip + page_size < len(instances):
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skip"]
        params.append(("$skip", str(skip + page_size)))
        body["@odata.nextLink"] = f"{graph_root(request)}{request.url.path[5:]}?" + urlencode(
            params
        )
    return JSONResponse(body, headers=headers)


def _check_if_match(request: Request, instance: Instance) -> None:
    """Optimistic concurrency: an ``If-Match`` etag must be the item's current one."""
    wanted = request.headers.get("if-match")
    if wanted is None or wanted.strip() == "*":
        return
    if wanted.strip() != f'W/"{instance.change_key}"':
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed "
            "in the request does not match the current change key for the item.",
        )


def _context(request: Request, user: str, tail: str, view: View) -> str:
    select = f"({','.join(view.select)})" if view.select else ""
    return f"{graph_root(request)}/$metadata#users('{context_user(user)}')/{tail}{select}"


def routes(state: EmulatorState) -> list[Route]:
    config = state.config

    async def calendar_view(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="readbasic") as access:
            check_options(request, supported={"$select", "$top", "$skip"})
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer)
            for name in view.select or ():
                if name in NOT_SELECTABLE_IN_VIEW:
                    raise GraphError(
                        400,
                        "RequestBroker--ParseUri",
                        f"The property '{name}' cannot be selected in a calendar view.",
                    )
            start, end = query_window(request.query_params)
            instances = state.calendars.instances(access.mailbox, start, end) if end > start else []
            return page_response(
                request,
                instances,
                view,
                page_size=page_size(request, config, prefer.max_page_size),
                context=_context(request, user, "calendar/calendarView", view),
                headers=prefer.applied(),
            )

    async def list_events(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="readbasic") as access:
            check_options(request, supported={"$select", "$top", "$skip"})
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer)
            mailbox = access.mailbox
            items = [as_instance(e, mailbox.upn) for e in state.calendars.items(mailbox)]
            return page_response(
                request,
                items,
                view,
                page_size=page_size(request, config, prefer.max_page_size),
                context=_context(request, user, "events", view),
                headers=prefer.applied(),
            )

    async def create_event(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="write") as access:
            body = await read_json(request)
            created = state.calendars.create_event(access.mailbox.id, body)
            instance = state.calendars.find(access.mailbox, created["id"])
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer, select=False)
            data = {"@odata.context": _context(request, user, "events/$entity", View())}
            location = f"{graph_root(request)}/users/{access.mailbox.id}/events/{created['id']}"
            return JSONResponse(
                data | render(instance, view),
                status_code=201,
                headers={"Location": location, **prefer.applied()},
            )

    async def get_event(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="readbasic") as access:
            check_options(request, supported={"$select"})
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer)
            instance = state.calendars.find(access.mailbox, request.path_params["event_id"])
            data = {"@odata.context": _context(request, user, "events/$entity", view)}
            return JSONResponse(data | render(instance, view), headers=prefer.applied())

    async def update_event(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="write") as access:
            patch = await read_json(request)
            event_id = request.path_params["event_id"]
            _check_if_match(request, state.calendars.find(access.mailbox, event_id))
            state.calendars.update_event(access.mailbox.id, event_id, patch)
            instance = state.calendars.find(access.mailbox, event_id)
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer, select=False)
            data = {"@odata.context": _context(request, user, "events/$entity", View())}
            return JSONResponse(data | render(instance, view), headers=prefer.applied())

    async def delete_event(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="write") as access:
            event_id = request.path_params["event_id"]
            _check_if_match(request, state.calendars.find(access.mailbox, event_id))
            state.calendars.delete_event(access.mailbox.id, event_id)
            return Response(status_code=204)

    found: list[Route] = []
    for base in ("/v1.0/users/{user}/events", "/v1.0/users/{user}/calendar/events"):
        found += [
            Route(base, list_events, methods=["GET"]),
            Route(base, create_event, methods=["POST"]),
            Route(base + "/{event_id}", get_event, methods=["GET"]),
            Route(base + "/{event_id}", update_event, methods=["PATCH"]),
            Route(base + "/{event_id}", delete_event, methods=["DELETE"]),
        ]
    for path in ("/v1.0/users/{user}/calendarView", "/v1.0/users/{user}/calendar/calendarView"):
        found.append(Route(path, calendar_view, methods=["GET"]))
    return found
