"""Subscription health and control: per calendar its subscription, expiry, last notification,
last successful refresh, last error and state; converging and rotating the clientState on
demand, through the process's subscription orchestration; and registering the subscriptions a
customer made itself (``orchestration.registration``)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from bookingcache.api.audit import AuditDep
from bookingcache.api.deps import (
    AdminDep,
    BearerDep,
    ContainerDep,
    TenantIdPath,
    TenantReader,
    require_admin,
)
from bookingcache.api.problems import FieldError, ProblemError, problem_responses
from bookingcache.api.throttle import AuthThrottle
from bookingcache.domain.subscriptions import RegisteredSubscription
from bookingcache.errors import ERROR_CLASSES, BadSignature, StoreUnavailable
from bookingcache.orchestration.health import CalendarHealth, State, fresh_since
from bookingcache.orchestration.orchestrator import ConvergeResult, Orchestrator
from bookingcache.orchestration.registration import UnknownMailboxes, register_subscriptions

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


class OnboardingOut(BaseModel):
    tenant: str
    linked: int = Field(description="rooms the tenant links")
    subscribed: int = Field(
        description="of them, rooms whose calendar has a subscription that has not failed or ended"
    )
    fresh: int = Field(
        description="of them, rooms whose calendar was read successfully within the tenant's "
        "staleness bound (a new room counts once its first read is done)"
    )
    staleness_bound_s: int


@router.get(
    "/v1/tenants/{tenant}/onboarding",
    response_model=OnboardingOut,
    summary="How many of the tenant's rooms are linked, subscribed and fresh",
    description=(
        "Counted by the database in one query, so cheap to poll while thousands of rooms are "
        "onboarded: the map is complete when `fresh` equals `linked`."
    ),
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def tenant_onboarding(tenant: TenantReader, container: ContainerDep) -> OnboardingOut:
    cutoffs = fresh_since([tenant], now=container.clock.now())
    progress = (await container.subscriptions.progress(cutoffs))[tenant.id]
    return OnboardingOut(
        tenant=tenant.id,
        linked=progress.linked,
        subscribed=progress.subscribed,
        fresh=progress.fresh,
        staleness_bound_s=tenant.staleness_bound_s,
    )


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
    tenant: TenantIdPath,
    _: AdminDep,
    orchestrator: OrchestratorDep,
    container: ContainerDep,
    audit: AuditDep,
) -> ConvergeOut:
    await container.store.get_tenant(tenant)
    converged = _converged(await orchestrator.converge(tenant))
    await audit.record("subscriptions.converge", tenant=tenant)
    return converged


@router.post(
    "/v1/tenants/{tenant}/subscriptions:rotate-client-state",
    response_model=ConvergeOut,
    summary="Make a new clientState current (the old one verifies during a grace period)",
    responses=problem_responses(404),
    openapi_extra=BEARER,
)
async def rotate_client_state(
    tenant: TenantIdPath,
    _: AdminDep,
    orchestrator: OrchestratorDep,
    container: ContainerDep,
    audit: AuditDep,
) -> ConvergeOut:
    await container.store.get_tenant(tenant)
    grace_s = container.settings.orchestration.client_state_grace_s
    rotated = _converged(await orchestrator.rotate_client_state(tenant))
    await audit.record("client_state.rotate", tenant=tenant, details={"grace_s": grace_s})
    return rotated


# --- registration of the customer's own subscriptions ----------------------------------------
SIGNED_OR_ADMIN: dict[str, Any] = {
    "parameters": [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": f"Instead of the admin token, Standard Webhooks: {meaning}",
            "schema": {"type": "string", "minLength": 1},
        }
        for name, meaning in (
            ("webhook-id", "the call's unique id (a replay is refused)"),
            ("webhook-timestamp", "Unix seconds, within 5 minutes of the service's clock"),
            (
                "webhook-signature",
                "`v1,<base64 HMAC-SHA256>` over `POST <path>\\n` and the body, with the "
                "tenant's signing secret",
            ),
        )
    ]
}


def _printable(value: str) -> str:
    """``value`` unless it holds a control character (no id, mailbox or clientState has one,
    and PostgreSQL cannot store a NUL)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("control characters are not allowed")
    return value


class RegisteredIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, description="Graph's subscription id")
    mailbox: str = Field(
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="the room mailbox it notifies about: a calendar a room of the tenant links",
    )
    expirationDateTime: AwareDatetime = Field(
        description="when Graph ends the subscription, as Graph answered it"
    )

    _printable_text = field_validator("id", "mailbox")(_printable)


class RegistrationIn(BaseModel):
    """The customer's own subscriptions, as ``bookingcache-connector register`` sends them."""

    model_config = ConfigDict(extra="forbid")

    clientState: str = Field(
        min_length=1,
        max_length=128,
        description="the clientState the subscriptions carry; it becomes the tenant's current "
        "one (the previous one keeps verifying for the clientState grace period)",
    )
    subscriptions: list[RegisteredIn] = Field(min_length=1, max_length=10_000)

    _printable_state = field_validator("clientState")(_printable)


class RegisteredOut(BaseModel):
    mailbox: str = Field(description="the calendar, spelt as the tenant's room links it")
    subscription_id: str
    expires_at: dt.datetime


class RegistrationOut(BaseModel):
    tenant: str
    refreshed: int = Field(
        description="calendars refreshed once because their subscription is new to the service"
    )
    subscriptions: list[RegisteredOut]


async def require_admin_or_tenant_signature(
    request: Request, tenant: TenantIdPath, container: ContainerDep, credentials: BearerDep
) -> None:
    """The admin token; or, without an ``Authorization`` header, the call signed with the
    tenant's signing secret as every contract call is (Standard Webhooks over the request line
    and the body), which is how the customer's connector sends it."""
    if credentials is not None or "webhook-signature" not in request.headers:
        await require_admin(request, container, credentials)
        return
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    try:
        await container.intake.verify_signed(
            tenant,
            method=request.method,
            path_with_query=target,
            headers=request.headers,
            body=await request.body(),
        )
    except BadSignature:
        throttle: AuthThrottle = request.app.state.auth_throttle
        throttle.failed(throttle.client_address(request.scope), None, now=container.clock.now())
        raise


@router.post(
    "/v1/tenants/{tenant}/subscriptions:register",
    response_model=RegistrationOut,
    summary="Register subscriptions the customer made itself (a connector run as a script)",
    description=(
        "For a tenant without a connector the service can call (no `connector_url`): the "
        "customer creates its subscriptions with `bookingcache-connector subscribe` "
        "(Alternative 1, pointing at this service's `/graph/notifications/{tenant}`) and "
        "registers them here, with the admin token or signed with the tenant's signing secret "
        "(`bookingcache-connector register --send`). All or nothing: a mailbox that is not a "
        "calendar of the tenant is a 422 and nothing is registered. Each subscription replaces "
        "its calendar's, with the status `registered`; the clientState becomes the tenant's "
        "current one. Register again after `bookingcache-connector renew` to record the new "
        "expiries; the health view marks them `expiring` and then `failing` "
        "(`subscription-expired`) otherwise. The body is at most 1 MiB (413 beyond): a "
        "tenant with thousands of rooms registers them in several calls."
    ),
    responses=problem_responses(401, 403, 404, 413, 422, 429),
    openapi_extra=SIGNED_OR_ADMIN,
    dependencies=[Depends(require_admin_or_tenant_signature)],
)
async def register(
    tenant: TenantIdPath,
    body: RegistrationIn,
    container: ContainerDep,
    request: Request,
    audit: AuditDep,
) -> RegistrationOut:
    rows = [
        RegisteredSubscription(row.mailbox, row.id, row.expirationDateTime)
        for row in body.subscriptions
    ]
    try:
        registered = await register_subscriptions(
            store=container.store,
            subscriptions=container.subscriptions,
            queue=container.queue,
            clock=container.clock,
            tenant_id=tenant,
            client_state=body.clientState,
            rows=rows,
            grace=dt.timedelta(seconds=container.settings.orchestration.client_state_grace_s),
        )
    except UnknownMailboxes as exc:
        raise ProblemError(
            422,
            "invalid-input",
            str(exc),
            field_errors=[
                FieldError(
                    field=f"body.subscriptions.{position}.mailbox",
                    message="not a calendar of the tenant",
                    type="unknown-mailbox",
                )
                for position in exc.positions
            ],
        ) from exc
    # This process's intake hears of the new subscriptions and clientState at once (others
    # look them up as their notifications arrive: an unknown id or secret is read afresh).
    container.intake.directory.forget()
    signed = "authorization" not in request.headers
    await audit.record(
        "subscriptions.register",
        tenant=tenant,
        details={"subscriptions": len(rows), "new": registered.new},
        # A call signed with the tenant's signing secret is the tenant's connector, not an admin.
        actor=f"tenant-signature:{tenant}" if signed else None,
    )
    return RegistrationOut(
        tenant=tenant,
        refreshed=registered.new,
        subscriptions=[
            RegisteredOut(
                mailbox=row.mailbox, subscription_id=row.subscription_id, expires_at=row.expires_at
            )
            for row in registered.rows
        ],
    )
