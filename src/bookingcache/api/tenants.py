"""Tenants: the customer organisations whose room calendars the service caches."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bookingcache.api.audit import AuditDep
from bookingcache.api.deps import (
    TENANT_ID_PATTERN,
    ClockDep,
    ContainerDep,
    SettingsDep,
    StoreDep,
    TenantIdPath,
    require_admin,
)
from bookingcache.api.numbers import WholeNumber
from bookingcache.api.problems import FieldError, ProblemError, problem_responses
from bookingcache.api.tenant_access import (
    NOTIFICATION_MODE_DESCRIPTION,
    GraphIn,
    GraphOut,
    check_combination,
    graph_change,
)
from bookingcache.contract.outbound import DEVELOPMENT, URL_NOT_ALLOWED, OutboundPolicy, check_url
from bookingcache.domain.tenancy import (
    EventSource,
    NotificationMode,
    Tenant,
    TenantSecrets,
    TitlePolicy,
    default_notification_mode,
)
from bookingcache.domain.timezones import resolve_time_zone
from bookingcache.errors import InvalidInput
from bookingcache.settings import Settings

MAX_STALENESS_S = 7 * 24 * 3600

router = APIRouter(
    prefix="/v1/tenants",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403),
)

Name = Annotated[str, Field(min_length=1, max_length=200)]
ConnectorUrl = Annotated[
    str,
    Field(
        max_length=2000,
        examples=["https://connector.example.com"],
        description="Where the service calls the tenant's connector. Outside development: "
        "https only, no user or password, no fragment, and a public host: loopback, "
        "localhost, link-local (169.254.169.254, fe80::/10), private, shared, unspecified, "
        "multicast and reserved addresses (IPv4-mapped IPv6 included) are refused with a 422 "
        "whose field error is at body.connector_url (type url-not-allowed)",
    ),
]
TimeZoneName = Annotated[
    str, Field(min_length=1, max_length=128, examples=["Europe/Berlin", "W. Europe Standard Time"])
]
StalenessS = Annotated[WholeNumber, Field(gt=0, le=MAX_STALENESS_S)]


def check_connector_url(value: str) -> str:
    """The form every environment asks for; ``allowed_connector_url`` adds the environment's
    outbound rules."""
    value = check_text(value).strip()
    if check_url(value, DEVELOPMENT) is not None:
        raise ValueError("connector_url must be an absolute http:// or https:// URL")
    return value.rstrip("/")


def allowed_connector_url(value: str | None, settings: Settings) -> None:
    """A 422 at ``body.connector_url`` when the outbound rules of the service's environment
    refuse ``value`` (contract.outbound)."""
    if value is None:
        return
    problem = check_url(value, OutboundPolicy.for_environment(settings.environment))
    if problem is not None:
        message = f"connector_url is not allowed: {problem}"
        raise ProblemError(
            422,
            "invalid-input",
            message,
            field_errors=[
                FieldError(field="body.connector_url", message=message, type=URL_NOT_ALLOWED)
            ],
        )


def canonical_time_zone(value: str) -> str:
    try:
        return resolve_time_zone(value).key
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


def check_text(value: str) -> str:
    """Printable text: control characters (NUL above all, which PostgreSQL cannot store) are
    refused here rather than failing in the database."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("control characters are not allowed")
    return value


def check_name(value: str) -> str:
    value = check_text(value).strip()
    if not value:
        raise ValueError("name must not be blank")
    return value


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=TENANT_ID_PATTERN,
        max_length=63,
        description="Lower-case letters, digits and dashes; used in every tenant URL",
        examples=["contoso"],
    )
    name: Name
    event_source: EventSource = EventSource.CONNECTOR
    connector_url: ConnectorUrl | None = None
    title_policy: TitlePolicy = TitlePolicy.HIDE_PRIVATE
    default_time_zone: TimeZoneName = "UTC"
    staleness_bound_s: StalenessS | None = Field(
        default=None, description="Data older than this reads as unknown; default from settings"
    )
    notification_mode: NotificationMode | None = Field(
        default=None, description=NOTIFICATION_MODE_DESCRIPTION
    )
    graph: GraphIn | None = Field(
        default=None, description="Required for event source `graph` (GraphIn)"
    )

    _name = field_validator("name")(check_name)
    _tz = field_validator("default_time_zone")(canonical_time_zone)

    @field_validator("connector_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_connector_url(value)

    @model_validator(mode="after")
    def _connector_needs_url(self) -> TenantCreate:
        if self.event_source is EventSource.CONNECTOR and self.connector_url is None:
            raise ValueError("connector_url is required when event_source is 'connector'")
        return self


class TenantUpdate(BaseModel):
    """Only the fields present change; ``connector_url`` and ``graph`` may be set to null."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    event_source: EventSource | None = None
    connector_url: ConnectorUrl | None = None
    title_policy: TitlePolicy | None = None
    default_time_zone: TimeZoneName | None = None
    staleness_bound_s: StalenessS | None = None
    notification_mode: NotificationMode | None = Field(
        default=None, description=NOTIFICATION_MODE_DESCRIPTION
    )
    graph: GraphIn | None = Field(
        default=None,
        description="Merged field by field into the stored access; null removes it (refused "
        "while the event source is `graph`)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("default_time_zone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else canonical_time_zone(value)

    @field_validator("connector_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_connector_url(value)

    @model_validator(mode="after")
    def _no_null_except_url(self) -> TenantUpdate:
        for name in self.model_fields_set - {"connector_url", "graph"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The plain fields present (``graph`` is merged apart, ``tenant_access``)."""
        return {name: getattr(self, name) for name in self.model_fields_set - {"graph"}}


class TenantOut(BaseModel):
    id: str
    name: str
    event_source: EventSource
    connector_url: str | None
    title_policy: TitlePolicy
    default_time_zone: str
    staleness_bound_s: int
    created_at: dt.datetime | None
    notification_mode: NotificationMode = Field(description=NOTIFICATION_MODE_DESCRIPTION)
    graph: GraphOut | None = Field(
        description="The graph source's access, without its secret; null when none is set"
    )

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(
            id=tenant.id,
            name=tenant.name,
            event_source=tenant.event_source,
            connector_url=tenant.connector_url,
            title_policy=tenant.title_policy,
            default_time_zone=tenant.default_time_zone,
            staleness_bound_s=tenant.staleness_bound_s,
            created_at=tenant.created_at,
            notification_mode=tenant.way_in,
            graph=GraphOut.of(tenant.graph),
        )


RESYNC_DESCRIPTION = (
    "true when this change alters what the service keeps of cached events (the title "
    "policy): events already cached keep what the old policy let through until their next "
    "refresh (reading applies the new policy at once). `POST /v1/tenants/{tenant}/calendars:"
    "resync` re-reads every calendar of the tenant now"
)


class TenantUpdated(TenantOut):
    resync_available: bool = Field(description=RESYNC_DESCRIPTION)


class ResyncOut(BaseModel):
    tenant: str
    calendars: int = Field(
        description="calendars given a pending full resync (a pending refresh is upgraded to "
        "one; a calendar being refreshed now gets one more after it)"
    )


class TenantSecretsOut(BaseModel):
    signing_secret: str = Field(
        description="Standard Webhooks secret (whsec_...) signing service<->connector calls"
    )
    read_token: str = Field(description="Bearer token for the tenant's availability calls")


class TenantCreated(TenantOut):
    secrets: TenantSecretsOut = Field(description="Shown once: the service cannot show them again")


class TenantList(BaseModel):
    tenants: list[TenantOut]


def generate_secrets(tenant_id: str) -> TenantSecrets:
    return TenantSecrets(
        signing_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
        read_token=f"{tenant_id}.{secrets.token_urlsafe(32)}",
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    summary="Create a tenant; its secrets are in this answer only",
    responses=problem_responses(409, 422),
)
async def create_tenant(
    body: TenantCreate, store: StoreDep, clock: ClockDep, settings: SettingsDep, audit: AuditDep
) -> TenantCreated:
    allowed_connector_url(body.connector_url, settings)
    mode = body.notification_mode or default_notification_mode(body.event_source)
    graph = graph_change(None, body.graph, present=body.graph is not None)
    check_combination(
        source=body.event_source, mode=mode, access=graph.access, shared_app=settings.sync.graph
    )
    tenant_secrets = generate_secrets(body.id)
    tenant = await store.create_tenant(
        Tenant(
            id=body.id,
            name=body.name,
            event_source=body.event_source,
            connector_url=body.connector_url,
            title_policy=body.title_policy,
            default_time_zone=body.default_time_zone,
            staleness_bound_s=body.staleness_bound_s or settings.default_staleness_s,
            created_at=clock.now(),
            notification_mode=mode,
            graph=graph.access,
        ),
        tenant_secrets,
        graph_credential=graph.credential,
    )
    details: dict[str, Any] = {
        "fields": sorted(body.model_fields_set - {"id"}),
        "read_token": "default",
        "notification_mode": mode.value,
    }
    if graph.access is not None:
        details["graph"] = graph.audited()
    await audit.record("tenant.create", tenant=tenant.id, details=details)
    return TenantCreated(
        **TenantOut.of(tenant).model_dump(),
        secrets=TenantSecretsOut(
            signing_secret=tenant_secrets.signing_secret, read_token=tenant_secrets.read_token
        ),
    )


@router.get("", response_model=TenantList, summary="List tenants")
async def list_tenants(store: StoreDep) -> TenantList:
    return TenantList(tenants=[TenantOut.of(t) for t in await store.list_tenants()])


@router.get(
    "/{tenant}", response_model=TenantOut, summary="Read a tenant", responses=problem_responses(404)
)
async def get_tenant(tenant: TenantIdPath, store: StoreDep) -> TenantOut:
    return TenantOut.of(await store.get_tenant(tenant))


@router.patch(
    "/{tenant}",
    response_model=TenantUpdated,
    summary="Change some of a tenant's settings",
    description="A new title policy applies to reads at once and to what is stored from the "
    "next refresh of each calendar; the answer's `resync_available` then says that "
    "`POST /v1/tenants/{tenant}/calendars:resync` re-reads the cached calendars now. "
    "Every process picks up a new event source, way in (`notification_mode`) or Graph access "
    "within seconds, without a restart: a new way in re-converges the tenant's subscriptions "
    "to its notification URL, new Graph credentials replace the process's cached token "
    "client. A contradiction (`push` with `direct`, `graph` without its access, a client "
    "secret without its client id, ...) is a 422 whose field error points at the field.",
    responses=problem_responses(404, 422),
)
async def update_tenant(
    tenant: TenantIdPath,
    body: TenantUpdate,
    store: StoreDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> TenantUpdated:
    current = await store.get_tenant(tenant)
    changes = body.changes()
    allowed_connector_url(changes.get("connector_url"), settings)
    source = changes.get("event_source", current.event_source)
    graph = graph_change(current.graph, body.graph, present="graph" in body.model_fields_set)
    check_combination(
        source=source,
        mode=changes.get("notification_mode", current.way_in),
        access=graph.access,
        shared_app=settings.sync.graph,
    )
    if "graph" in body.model_fields_set:
        changes.update(graph.store_changes())
    url = changes.get("connector_url", current.connector_url)
    if source is EventSource.CONNECTOR and url is None:
        raise ProblemError(
            422,
            "invalid-input",
            "connector_url is required when event_source is 'connector'",
            field_errors=[
                FieldError(
                    field="body.connector_url",
                    message="required when event_source is 'connector'",
                    type="missing",
                )
            ],
        )
    if not changes:
        return TenantUpdated(**TenantOut.of(current).model_dump(), resync_available=False)
    updated = await store.update_tenant(tenant, changes)
    await audit.record(
        "tenant.update",
        tenant=tenant,
        details={
            name: graph.audited() if name == "graph" else _audited(value)
            for name, value in sorted(changes.items())
            if name != "graph_credential"
        },
    )
    return TenantUpdated(
        **TenantOut.of(updated).model_dump(),
        resync_available=updated.title_policy != current.title_policy,
    )


def _audited(value: Any) -> Any:
    """A changed setting as the audit log keeps it (the graph access's secret never comes
    here, ``GraphChange.audited``; a connector URL loses its query, which may carry a key)."""
    if isinstance(value, str) and "?" in value:
        return value.split("?", 1)[0] + "?…"
    return value.value if isinstance(value, StrEnum) else value


@router.post(
    "/{tenant}/calendars:resync",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResyncOut,
    summary="Re-read every cached calendar of the tenant from its event source now",
    description="Each calendar gets a full resync job, due now; the worker re-reads its window "
    "and replaces what is cached, keeping only what the tenant's title policy lets through. "
    "For an event source `push` tenant nothing is read: its relay pushes windows itself.",
    responses=problem_responses(404),
)
async def resync_tenant(
    tenant: TenantIdPath, container: ContainerDep, audit: AuditDep
) -> ResyncOut:
    await container.store.get_tenant(tenant)
    calendars = [(tenant, c.mailbox) for c in await container.store.list_calendars(tenant)]
    # A queued refresh is pulled in and made a full resync; a running one is followed by one.
    queued = await container.queue.request_refresh(
        calendars, due=container.clock.now(), full_resync=True
    )
    await audit.record("calendars.resync", tenant=tenant, details={"calendars": queued})
    return ResyncOut(tenant=tenant, calendars=queued)


@router.delete(
    "/{tenant}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a tenant with its rooms and cached events",
    responses=problem_responses(404),
)
async def delete_tenant(tenant: TenantIdPath, store: StoreDep, audit: AuditDep) -> Response:
    await store.delete_tenant(tenant)
    await audit.record("tenant.delete", tenant=tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
