"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from bookingcache.api.deps import ContainerDep
from bookingcache.api.problems import problem_responses

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok", "ready"]


class HeldDuty(BaseModel):
    duty: str = Field(description="converge, sweep, silence or retention")
    token: int = Field(description="the lease's fencing token")
    expires_at: dt.datetime = Field(description="when the lease runs out unless renewed")


class Readiness(BaseModel):
    status: Literal["ready"]
    instance_id: str = Field(description="this process's stable identity in the cluster")
    incarnation: str = Field(description="this start of the process; job claims carry it")
    duties: list[HeldDuty] = Field(
        description="the cluster duties whose lease this process holds (docs/operations.md)"
    )
    candidate_duties: list[str] = Field(
        description="the cluster duties this process runs when it holds their lease"
    )
    claims: int = Field(description="refresh jobs this process holds claimed (leased) now")


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: the database answers and its migrations are at head; what this "
    "process holds",
    responses=problem_responses(503),
)
async def readyz(container: ContainerDep) -> Readiness:
    await container.store.ping()
    duties = container.duties
    return Readiness(
        status="ready",
        instance_id=duties.instance_id,
        incarnation=duties.incarnation,
        duties=[
            HeldDuty(duty=lease.duty, token=lease.token, expires_at=lease.expires_at)
            for lease in duties.held()
        ],
        candidate_duties=duties.wanted(),
        claims=container.claims_held,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
