"""Rooms: map rooms linked to room mailboxes, one at a time or imported in bulk."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel

from bookingcache.api.audit import AuditDep
from bookingcache.api.deps import StoreDep, TenantIdPath, require_admin
from bookingcache.api.problems import ProblemError, problem_responses
from bookingcache.api.room_import import ImportRejected, parse_csv, parse_json
from bookingcache.api.room_input import (
    PRINTABLE_PATTERN,
    ROOM_ID_PATTERN,
    ImportedRoom,
    RoomLink,
    RoomOut,
)

MAX_IMPORT_BYTES = 10 * 1024 * 1024

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["rooms"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403, 404),
)

RoomIdPath = Annotated[
    str, Path(description="The room's id in the map", pattern=ROOM_ID_PATTERN, max_length=128)
]


class RoomList(BaseModel):
    rooms: list[RoomOut]


class RoomImport(BaseModel):
    """The JSON form of an import."""

    rooms: list[ImportedRoom]


class ImportResult(BaseModel):
    created: int
    updated: int


@router.put(
    "/rooms/{room}",
    response_model=RoomOut,
    summary="Link a map room to a room mailbox (create or replace)",
    responses={
        200: {"description": "Replaced"},
        201: {"description": "Created", "model": RoomOut},
        **problem_responses(422),
    },
)
async def put_room(
    tenant: TenantIdPath,
    room: RoomIdPath,
    body: RoomLink,
    store: StoreDep,
    response: Response,
    audit: AuditDep,
) -> RoomOut:
    await store.get_tenant(tenant)
    stored, created = await store.put_room(body.to_room(tenant, room))
    await audit.record(
        "room.link",
        tenant=tenant,
        target=room,
        details={"mailbox": stored.mailbox, "created": created},
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
        response.headers["Location"] = f"/v1/tenants/{tenant}/rooms/{room}"
    return RoomOut.of(stored)


@router.get("/rooms/{room}", response_model=RoomOut, summary="Read a room link")
async def get_room(tenant: TenantIdPath, room: RoomIdPath, store: StoreDep) -> RoomOut:
    return RoomOut.of(await store.get_room(tenant, room))


@router.delete(
    "/rooms/{room}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Unlink a room",
)
async def delete_room(
    tenant: TenantIdPath, room: RoomIdPath, store: StoreDep, audit: AuditDep
) -> Response:
    await store.delete_room(tenant, room)
    await audit.record("room.unlink", tenant=tenant, target=room)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/rooms", response_model=RoomList, summary="List rooms, optionally of one building/floor"
)
async def list_rooms(
    tenant: TenantIdPath,
    store: StoreDep,
    building: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE_PATTERN)] = None,
    floor: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE_PATTERN)] = None,
) -> RoomList:
    await store.get_tenant(tenant)
    rooms = await store.list_rooms(tenant, building=building, floor=floor)
    return RoomList(rooms=[RoomOut.of(r) for r in rooms])


_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "CSV with the header room_id,mailbox,name[,building,floor,time_zone,geometry,capacity] "
            '(geometry as GeoJSON text), or JSON {"rooms": [...]}. All or nothing.'
        ),
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "room_id,mailbox,name,building,floor,time_zone\n"
                "r-101,room.101@contoso.com,Ada,HQ,1,Europe/Berlin\n",
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/RoomImport"}},
        },
    }
}


@router.post(
    "/rooms:import",
    response_model=ImportResult,
    summary="Import rooms from CSV or JSON, all or nothing",
    openapi_extra=_IMPORT_BODY,
    responses=problem_responses(413, 415, 422),
)
async def import_rooms(
    tenant: TenantIdPath, request: Request, store: StoreDep, audit: AuditDep
) -> ImportResult:
    await store.get_tenant(tenant)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("text/csv", "application/json"):
        raise ProblemError(415, "unsupported-media-type", "send text/csv or application/json")
    data = await request.body()
    try:
        imported = parse_csv(data) if media_type == "text/csv" else parse_json(data)
    except ImportRejected as exc:
        raise ProblemError(
            422, "invalid-import", exc.detail, field_errors=exc.field_errors
        ) from None
    rooms = [item.to_room(tenant, item.room_id) for item in imported]
    created, updated = await store.import_rooms(tenant, rooms)
    await audit.record(
        "rooms.import", tenant=tenant, details={"created": created, "updated": updated}
    )
    return ImportResult(created=created, updated=updated)


def openapi_components() -> dict[str, Any]:
    """Schemas the import's hand-written request body refers to."""
    schema = RoomImport.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(schema.pop("$defs", {}))
    components["RoomImport"] = schema
    return components
