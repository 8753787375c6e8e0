"""Subscription health and control: per calendar its subscription, expiry, last notification,
last successful refresh, last error and state; converging and rotating the clientState on
demand. The router's lifespan runs the subscription orchestration beside the API."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from bookingcache.api.deps import AdminDep, ContainerDep, TenantIdPath, TenantReader
from bookingcache.api.problems import problem_responses
from bookingcache.errors import StoreUnavailable
from bookingcache.orchestration.health import CalendarHealth, HealthMetrics, State
from bookingcache.orchestration.orchestrator import ConvergeResult, Orchestrator
from bookingcache.orchestration.settings import OrchestrationSettings
from bookingcache.store.sql import SqlStore

log = logging.getLogger(__name__)

BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, so the container is built already."""
    container = app.state.container
    settings: OrchestrationSettings | None = getattr(app.state, "orchestration_settings", None)
    settings = settings or OrchestrationSettings()
    orchestrator: Orchestrator | None = None
    if settings.enabled and container is not None and isinstance(container.store, SqlStore):
        # One set of metrics per app, however often its lifespan runs.
        metrics = getattr(app.state, "subscription_metrics", None)
        if not isinstance(metrics, HealthMetrics):
            metrics = HealthMetrics(container.metrics)
            app.state.subscription_metrics = metrics
        orchestrator = Orchestrator(
            container.store,
            clock=container.clock,
            public_base_url=container.settings.resolved_public_base_url,
            settings=settings,
            queue=container.queue,
            metrics=metrics,
            connector_transport=getattr(app.state, "connector_transport", None),
        )
        orchestrator.start()
        app.state.on_unknown_subscription = orchestrator.unknown_subscription
    app.state.orchestrator = orchestrator
    try:
        yield
    finally:
        app.state.orchestrator = None
        app.state.on_unknown_subscription = None
        if orchestrator is not None:
            await orchestrator.stop()


router = APIRouter(tags=["subscriptions"], lifespan=lifespan)


def _orchestrator(request: Request, container: ContainerDep) -> Orchestrator:
    orchestrator = getattr(request.app.state, "orchestrator", None)
    if not isinstance(orchestrator, Orchestrator):
        raise StoreUnavailable("the subscription orchestration is not running in this process")
    return orchestrator


OrchestratorDep = Annotated[Orchestrator, Depends(_orchestrator)]


class CalendarHealthOut(BaseModel):
    tenant: str
    mailbox: str
    subscription_id: str | None
    expires_at: dt.datetime | None
    last_notification_at: dt.datetime | None
    last_success_at: dt.datetime | None = Field(description="last successful refresh")
    last_error: str | None
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
    error: str | None


class ConvergeOut(BaseModel):
    tenant: str
    error: str | None
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
                expires_at=row.expiration,
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
