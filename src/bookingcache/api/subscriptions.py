"""Subscription health and control: per calendar its subscription, expiry, last notification,
last successful refresh, last error and state; converging and rotating the clientState on
demand, through the process's subscription orchestration."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from bookingcache.api.deps import AdminDep, ContainerDep, TenantIdPath, TenantReader
from bookingcache.api.problems import problem_responses
from bookingcache.errors import ERROR_CLASSES, StoreUnavailable
from bookingcache.orchestration.health import CalendarHealth, State
from bookingcache.orchestration.orchestrator import ConvergeResult, Orchestrator

log = logging.getLogger(__name__)

BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}

ERROR_DESCRIPTION = (
    "why the calendar is failing, as a stable class, followed by the upstream's HTTP status "
    "where there was one (`connector-error (HTTP 500)`); never text an upstream sent (the "
    "service's log has the detail). Classes: "
    + "; ".join(f"`{name}`: {meaning}" for name, meaning in ERROR_CLASSES.items())
)


router = APIRouter(tags=["subscriptions"])


async def _orchestrator(container: ContainerDep) -> Orchestrator:
    if container.orchestrator is None:
        raise StoreUnavailable("the subscription orchestration is not running in this process")
    return container.orchestrator


OrchestratorDep = Annotated[Orchestrator, Depends(_orchestrator)]


class CalendarHealthOut(BaseModel):
    tenant: str
    mailbox: str
    subscription_id: str | None
    expires_at: dt.datetime | None
    last_notification_at: dt.datetime | None
    last_success_at: dt.datetime | None = Field(description="last successful refresh")
    last_error: str | None = Field(description=ERROR_DESCRIPTION)
    state: Literal["healthy", "expiring", "failing", "silent", "unsubscribed"]
    unannounced_changes: int = Field(
        description="changes reconciliation found in a row that no notification announced"
    )


class HealthOut(BaseModel):
    counts: dict[str, int]
    calendars: list[CalendarHealthOut]


class ConvergeRowOut(BaseModel):
    mailbox: str
    subscription_id: str | None
    expires_at: dt.datetime | None
    status: str
    error: str | None = Field(description="`subscription-failed` when `status` is `failed`")


class ConvergeOut(BaseModel):
    tenant: str
    error: str | None = Field(
        description="the class of failure of the call to the connector, as in `last_error`"
    )
    subscriptions: list[ConvergeRowOut]


def _health(report: list[CalendarHealth]) -> HealthOut:
    counts = dict.fromkeys((state.value for state in State), 0)
    for item in report:
        counts[item.state.value] += 1
    return HealthOut(
        counts=counts,
        calendars=[
            CalendarHealthOut(
                tenant=item.tenant_id,
                mailbox=item.mailbox,
                subscription_id=item.subscription_id,
                expires_at=item.expires_at,
                last_notification_at=item.last_notification_at,
                last_success_at=item.last_success_at,
                last_error=item.last_error,
                state=item.state.value,
                unannounced_changes=item.unannounced_changes,
            )
            for item in report
        ],
    )


def _converged(result: ConvergeResult) -> ConvergeOut:
    return ConvergeOut(
        tenant=result.tenant_id,
        error=result.error,
        subscriptions=[
            ConvergeRowOut(
                mailbox=row.mailbox,
                subscription_id=row.subscription_id,
                expires_at=row.expires_at,
                status=row.status,
                error=row.error,
            )
            for row in result.rows
        ],
    )


@router.get(
    "/v1/tenants/{tenant}/subscriptions",
    response_model=HealthOut,
    summary="Subscription health of the tenant's calendars",
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def tenant_subscriptions(tenant: TenantReader, orchestrator: OrchestratorDep) -> HealthOut:
    return _health(await orchestrator.health(tenant.id))


@router.get(
    "/v1/subscriptions",
    response_model=HealthOut,
    summary="Subscription health of every calendar of every tenant (operators)",
    openapi_extra=BEARER,
)
async def all_subscriptions(_: AdminDep, orchestrator: OrchestratorDep) -> HealthOut:
    return _health(await orchestrator.health())


@router.post(
    "/v1/tenants/{tenant}/subscriptions:converge",
    response_model=ConvergeOut,
    summary="Converge the tenant's subscriptions through its connector now",
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def converge_now(
    tenant: TenantIdPath, _: AdminDep, orchestrator: OrchestratorDep, container: ContainerDep
) -> ConvergeOut:
    await container.store.get_tenant(tenant)
    return _converged(await orchestrator.converge(tenant))


@router.post(
    "/v1/tenants/{tenant}/subscriptions:rotate-client-state",
    response_model=ConvergeOut,
    summary="Make a new clientState current (the old one verifies during a grace period)",
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def rotate_client_state(
    tenant: TenantIdPath, _: AdminDep, orchestrator: OrchestratorDep, container: ContainerDep
) -> ConvergeOut:
    await container.store.get_tenant(tenant)
    return _converged(await orchestrator.rotate_client_state(tenant))
