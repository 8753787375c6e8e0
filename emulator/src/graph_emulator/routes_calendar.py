"""``GET /users/{id}/calendar`` (the default calendar) and ``GET .../events/{id}/instances``
(the occurrences and exceptions of one series inside a window)."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.errors import GraphError
from graph_emulator.expansion import expand
from graph_emulator.ids import PREFIX
from graph_emulator.pipeline import (
    check_options,
    context_user,
    graph_root,
    mailbox_access,
    parse_prefer,
    view_for,
)
from graph_emulator.routes_events import page_response, page_size, query_window

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState


def calendar_id(mailbox_id: str) -> str:
    digest = hashlib.sha256(b"calendar:" + mailbox_id.encode()).digest()
    return PREFIX + base64.urlsafe_b64encode(b"\x02" + digest[:31]).decode()


def routes(state: EmulatorState) -> list[Route]:
    async def get_calendar(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="readbasic") as access:
            mailbox = access.mailbox
            body: dict[str, Any] = {
                "@odata.context": f"{graph_root(request)}/$metadata#users('"
                f"{context_user(user)}')/calendar/$entity",
                "id": calendar_id(mailbox.id),
                "name": "Calendar",
                "color": "auto",
                "hexColor": "",
                "isDefaultCalendar": True,
                "changeKey": "DwAAABYAAAA=",
                "canShare": False,
                "canViewPrivateItems": True,
                "canEdit": access.principal.can_read_full,
                "allowedOnlineMeetingProviders": ["teamsForBusiness"],
                "defaultOnlineMeetingProvider": "teamsForBusiness",
                "isTallyingResponses": True,
                "isRemovable": False,
                "owner": {"name": mailbox.display_name, "address": mailbox.upn},
            }
            return JSONResponse(body)

    async def instances(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="readbasic") as access:
            check_options(request, supported={"$select", "$top", "$skip"})
            start, end = query_window(request.query_params)
            master = state.calendars.find(access.mailbox, request.path_params["event_id"])
            if master.type != "seriesMaster":
                raise GraphError(
                    400, "ErrorInvalidRequest", "The specified item is not a recurring master."
                )
            found = expand(master.event, access.mailbox.upn, start, end) if end > start else []
            prefer = parse_prefer(request)
            view = view_for(request, access, prefer)
            return page_response(
                request,
                found,
                view,
                page_size=page_size(request, state.config, prefer.max_page_size),
                context=f"{graph_root(request)}/$metadata#Collection(event)",
                headers=prefer.applied(),
            )

    return [
        Route("/v1.0/users/{user}/calendar", get_calendar, methods=["GET"]),
        Route("/v1.0/users/{user}/events/{event_id}/instances", instances, methods=["GET"]),
        Route(
            "/v1.0/users/{user}/calendar/events/{event_id}/instances", instances, methods=["GET"]
        ),
    ]
