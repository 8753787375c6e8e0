"""Dependencies of the HTTP API, as ``Annotated`` aliases endpoints declare in their signatures.

Auth: management needs the admin token; reading a tenant's availability needs that tenant's read
token or the admin token, both as ``Authorization: Bearer``. Read tokens look like
``<tenant id>.<random>``, so a valid token presented for the wrong tenant (or for management)
is told apart from a wrong one: 403 rather than 401. A wrong token counts against the failure
budgets of its client address and of the tenant it names (``api.throttle``): over budget, the
answer is 429 rather than 401. A valid token is never throttled.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from bookingcache.api.throttle import AuthThrottle
from bookingcache.clock import Clock
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import Forbidden, StoreUnavailable, Unauthorized
from bookingcache.intake.service import IntakeService
from bookingcache.orchestration.orchestrator import Orchestrator
from bookingcache.read.model import ReadModel
from bookingcache.read.stream import StreamHub
from bookingcache.read.tickets import StreamTickets
from bookingcache.settings import Settings
from bookingcache.store.audit import AuditLog
from bookingcache.store.duties import DutyKeeper
from bookingcache.store.jobs import JobQueue
from bookingcache.store.port import Store
from bookingcache.store.subscriptions import Subscriptions

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_TENANT_ID = re.compile(TENANT_ID_PATTERN)

_bearer = HTTPBearer(
    auto_error=False,
    description="The admin token, or a tenant's read token for availability calls",
)


class Services(Protocol):
    """What the API works with: the parts the composition root built and started for this
    process (``bootstrap.Container``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def admin_token(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def metrics(self) -> CollectorRegistry: ...

    @property
    def store(self) -> Store: ...

    @property
    def queue(self) -> JobQueue: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def intake(self) -> IntakeService: ...

    @property
    def read_model(self) -> ReadModel: ...

    @property
    def stream_hub(self) -> StreamHub: ...

    @property
    def stream_tickets(self) -> StreamTickets: ...

    @property
    def duties(self) -> DutyKeeper: ...

    @property
    def claims_held(self) -> int: ...

    @property
    def orchestrator(self) -> Orchestrator | None:
        """None when the subscription orchestration is turned off."""
        ...

    async def close(self) -> None: ...


def services_of(app: FastAPI) -> Services:
    """The running app's services (``StoreUnavailable`` while the service starts or stops)."""
    services: Services | None = getattr(app.state, "services", None)
    if services is None:
        raise StoreUnavailable("the service is starting or stopping")
    return services


# Dependencies are coroutines even where they need not be: FastAPI runs plain functions in a
# worker thread, a hop that costs more than these lookups.
async def _services(request: Request) -> Services:
    return services_of(request.app)


ContainerDep = Annotated[Services, Depends(_services)]


async def get_store(container: ContainerDep) -> Store:
    return container.store


async def get_clock(container: ContainerDep) -> Clock:
    return container.clock


async def get_settings(container: ContainerDep) -> Settings:
    return container.settings


StoreDep = Annotated[Store, Depends(get_store)]
ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
TenantIdPath = Annotated[
    str, Path(description="The tenant's id", pattern=TENANT_ID_PATTERN, max_length=63)
]


def _presented_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("send the admin token or a read token as 'Authorization: Bearer ...'")
    return credentials.credentials


def _is_admin(container: Services, token: str) -> bool:
    return hmac.compare_digest(token.encode(), container.admin_token.encode())


def read_token_tenant(token: str) -> str | None:
    """The tenant a read token claims to belong to (checked separately)."""
    tenant_id, dot, rest = token.partition(".")
    return tenant_id if dot and rest and tenant_id else None


async def _is_valid_read_token(container: Services, tenant_id: str, token: str) -> bool:
    """Checked in memory (``read.access``): a guess costs no database round trip, and a token
    naming an unknown tenant fails after the same work as a wrong one naming a known tenant."""
    return await container.read_model.access.read_token_valid(tenant_id, token)


def refused_token(request: Request, services: Services, claimed: str | None) -> Unauthorized:
    """The 401 of a wrong token, counted against the failure budgets of the client's address
    and of the tenant the token names; ``TooManyFailedAttempts`` (429) instead when either is
    spent."""
    throttle: AuthThrottle = request.app.state.auth_throttle
    tenant = claimed if claimed is not None and _TENANT_ID.fullmatch(claimed) else None
    throttle.failed(throttle.client_address(request.scope), tenant, now=services.clock.now())
    return Unauthorized("the token is not valid")


async def require_admin(request: Request, container: ContainerDep, credentials: BearerDep) -> None:
    token = _presented_token(credentials)
    if _is_admin(container, token):
        return
    claimed = read_token_tenant(token)
    if claimed is not None and await _is_valid_read_token(container, claimed, token):
        raise Forbidden("a read token cannot manage tenants or rooms; use the admin token")
    raise refused_token(request, container, claimed)


async def require_tenant_reader(
    request: Request, tenant: TenantIdPath, container: ContainerDep, credentials: BearerDep
) -> Tenant:
    token = _presented_token(credentials)
    if _is_admin(container, token):
        return await container.store.get_tenant(tenant)
    claimed = read_token_tenant(token)
    if claimed is None or not await _is_valid_read_token(container, claimed, token):
        raise refused_token(request, container, claimed)
    if claimed != tenant:
        raise Forbidden(f"this read token belongs to another tenant, not {tenant!r}")
    return await container.store.get_tenant(tenant)


AdminDep = Annotated[None, Depends(require_admin)]
TenantReader = Annotated[Tenant, Depends(require_tenant_reader)]
