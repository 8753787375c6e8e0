"""``/users/{id|upn}`` and ``/places/microsoft.graph.room``.

Directory reads need directory permissions, as on Graph: ``User.Read.All`` (or a broader user or
directory role) for users, ``Place.Read.All`` for rooms. ``Calendars.*`` alone is ``403``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.auth import AppPrincipal, authenticate
from graph_emulator.errors import GraphError
from graph_emulator.pipeline import check_options, graph_root, int_option

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState


USER_READERS = frozenset(
    {
        "User.Read.All",
        "User.ReadBasic.All",
        "User.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    }
)
PLACE_READERS = frozenset({"Place.Read.All", "Place.ReadWrite.All"})


def _require_users(principal: AppPrincipal) -> None:
    if not principal.roles & USER_READERS:
        raise GraphError(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )


def _require_places(principal: AppPrincipal) -> None:
    if not principal.roles & PLACE_READERS:
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )


def routes(state: EmulatorState) -> list[Route]:
    async def get_user(request: Request) -> Response:
        _require_users(await authenticate(request, state))
        check_options(request, supported={"$select"})
        mailbox = state.directory.resolve_user(request.path_params["user"])
        body = {"@odata.context": f"{graph_root(request)}/$metadata#users/$entity"}
        data = mailbox.user_json()
        select = request.query_params.get("$select")
        if select:
            wanted = {s.strip() for s in select.split(",")} | {"id"}
            data = {k: v for k, v in data.items() if k in wanted}
        return JSONResponse(body | data)

    async def list_rooms(request: Request) -> Response:
        _require_places(await authenticate(request, state))
        check_options(request, supported={"$top", "$skip"})
        top = int_option(request, "$top", low=1, high=999) or 100
        skip = int_option(request, "$skip", low=0, high=10**9) or 0
        rooms = sorted(state.directory.rooms(), key=lambda m: m.upn)
        page = rooms[skip : skip + top]
        body: dict[str, object] = {
            "@odata.context": f"{graph_root(request)}/$metadata#places/microsoft.graph.room",
            "value": [r.room_json() for r in page],
        }
        if skip + top < len(rooms):
            body["@odata.nextLink"] = (
                f"{graph_root(request)}/places/microsoft.graph.room?$top={top}&$skip={skip + top}"
            )
        return JSONResponse(body)

    return [
        Route("/v1.0/users/{user}", get_user, methods=["GET"]),
        Route("/v1.0/places/microsoft.graph.room", list_rooms, methods=["GET"]),
    ]
