"""Availability of map rooms: status now, next change, busy intervals, free slots, segments.

Answers come from the in-memory read model (``answers.room_answers``): each room's answer is
encoded once and reused while valid, so a map polling a floor gets bytes, not work. The
pydantic models below document the shapes in /openapi.json; the tests hold the encoded answers
to them.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bookingcache.api.answers import bulk_answer, room_answers
from bookingcache.api.deps import TenantIdPath, read_token_tenant, refused_token, services_of
from bookingcache.api.numbers import WholeNumber
from bookingcache.api.problems import FieldError, ProblemError, problem_responses
from bookingcache.clock import Clock
from bookingcache.domain.availability import (
    RoomStatus,
)
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import Forbidden, Unauthorized
from bookingcache.read.model import ReadModel

MAX_BULK_ROOMS = 5000
DEFAULT_MIN_FREE_MINUTES = 15

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["availability"],
    responses=problem_responses(401, 403, 404, 422),
)


@dataclass(frozen=True, slots=True)
class Reading:
    """What an availability request works with: the authorised tenant, the read model and
    the clock."""

    tenant: Tenant
    model: ReadModel
    clock: Clock


def _bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def authorised_reading(request: Request, tenant: TenantIdPath) -> Reading:
    """``deps.TenantReader``'s rules (the admin token, or the tenant's own read token: 401 for
    a wrong token, or 429 once its failure budgets are spent, 403 for another tenant's, 404 for
    an unknown tenant), answered from the read model's in-memory token hashes and short-lived
    cache of tenants. Availability is the hot path:
    two database round trips (and a thread hop per synchronous dependency, and the work of
    resolving nested ones) would cost more than the answer itself, so this is one asynchronous
    dependency that reads the bearer token itself (``BEARER`` documents it in the OpenAPI)."""
    services = services_of(request.app)
    model = services.read_model
    token = _bearer_token(request)
    if not token:
        raise Unauthorized("send the admin token or a read token as 'Authorization: Bearer ...'")
    if not hmac.compare_digest(token.encode(), services.admin_token.encode()):
        claimed = read_token_tenant(token)
        if claimed is None or not await model.access.read_token_valid(claimed, token):
            raise refused_token(request, services, claimed)
        if claimed != tenant:
            raise Forbidden(f"this read token belongs to another tenant, not {tenant!r}")
    return Reading(tenant=await model.access.tenant(tenant), model=model, clock=services.clock)


ReadingDep = Annotated[Reading, Depends(authorised_reading)]
# The security requirement of every availability operation, as deps.BearerDep would declare it.
BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


# --- wire shapes -----------------------------------------------------------------------------


class TimeRange(BaseModel):
    start: dt.datetime = Field(description="ISO 8601 UTC, e.g. 2026-11-24T08:00:00Z")
    end: dt.datetime


class StatusSegmentOut(TimeRange):
    status: RoomStatus


class RoomAvailabilityOut(BaseModel):
    room_id: str
    mailbox: str
    name: str
    building: str | None
    floor: str | None
    time_zone: str = Field(description="the room's IANA or Windows zone; places all-day events")
    window: TimeRange
    status: RoomStatus = Field(description="now; unknown when never synced or stale")
    next_change_at: dt.datetime | None = Field(
        description="when the status next changes, looked for up to the window's end"
    )
    next_status: RoomStatus | None
    stale: bool = Field(description="the calendar was never synced or not within the bound")
    last_synced_at: dt.datetime | None
    busy: list[TimeRange] = Field(description="merged stretches taken (tentative, busy, oof)")
    free: list[TimeRange] = Field(description="gaps of at least min_free_minutes")
    segments: list[StatusSegmentOut] = Field(description="stretches of constant non-free status")


class BulkAvailabilityRequest(BaseModel):
    """Either ``rooms`` (map room ids) or a ``building`` with an optional ``floor``."""

    model_config = ConfigDict(extra="forbid")

    rooms: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=MAX_BULK_ROOMS
    )
    building: str | None = Field(default=None, min_length=1, max_length=200)
    floor: str | None = Field(default=None, min_length=1, max_length=64)
    start: dt.datetime | None = Field(default=None, description="default: now (to the minute)")
    end: dt.datetime | None = Field(default=None, description="default: end of each room's day")
    min_free_minutes: WholeNumber = Field(default=DEFAULT_MIN_FREE_MINUTES, ge=1, le=1440)

    @model_validator(mode="after")
    def _one_selection(self) -> BulkAvailabilityRequest:
        if (self.rooms is None) == (self.building is None):
            raise ValueError("give either 'rooms' or 'building' (with an optional 'floor')")
        if self.floor is not None and self.building is None:
            raise ValueError("'floor' needs 'building'")
        return self


class BulkAvailabilityOut(BaseModel):
    rooms: list[RoomAvailabilityOut]


# --- endpoints -------------------------------------------------------------------------------


@router.get(
    "/rooms/{room}/availability",
    response_model=RoomAvailabilityOut,
    summary="A room's status now, next change, busy intervals and free slots",
    openapi_extra=BEARER,
)
async def room_availability_endpoint(
    room: str,
    reading: ReadingDep,
    start: Annotated[dt.datetime | None, Query(description="default: now (to the minute)")] = None,
    end: Annotated[dt.datetime | None, Query(description="default: end of the room's day")] = None,
    min_free_minutes: Annotated[int, Query(ge=1, le=1440)] = DEFAULT_MIN_FREE_MINUTES,
) -> Response:
    model = reading.model
    view = await model.view(reading.tenant)
    entry = await model.room(view, room)
    [answer] = await room_answers(
        model,
        view,
        [entry],
        tenant=reading.tenant,
        now=reading.clock.now(),
        start=start,
        end=end,
        min_free=dt.timedelta(minutes=min_free_minutes),
    )
    return Response(content=answer, media_type="application/json")


@router.post(
    "/availability",
    response_model=BulkAvailabilityOut,
    summary="Availability of many rooms: a list of room ids, or a building and optional floor",
    openapi_extra=BEARER,
)
async def bulk_availability(
    body: BulkAvailabilityRequest,
    reading: ReadingDep,
) -> Response:
    model, tenant = reading.model, reading.tenant
    view = await model.view(tenant)
    if body.rooms is not None:
        await model.recheck_unknown(view, body.rooms)
        missing = [
            FieldError(
                field=f"body.rooms[{index}]",
                message=f"room {room_id!r} is not linked in tenant {tenant.id!r}",
                type="not_found",
            )
            for index, room_id in enumerate(body.rooms)
            if room_id not in view.rooms
        ]
        if missing:
            raise ProblemError(
                404, "not-found", f"{len(missing)} of the rooms are unknown", field_errors=missing
            )
        entries = [view.rooms[room_id] for room_id in dict.fromkeys(body.rooms)]
        selection: tuple[object, ...] = ("rooms", *(entry.room_id for entry in entries))
    else:
        assert body.building is not None
        entries = view.rooms_where(building=body.building, floor=body.floor)
        selection = ("building", body.building, body.floor)
    answer = await bulk_answer(
        model,
        view,
        entries,
        selection=selection,
        tenant=tenant,
        now=reading.clock.now(),
        start=body.start,
        end=body.end,
        min_free=dt.timedelta(minutes=body.min_free_minutes),
    )
    return Response(content=answer, media_type="application/json")
