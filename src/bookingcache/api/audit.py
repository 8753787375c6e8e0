"""The audit log of admin changes: recording them (``AuditDep``, which every admin endpoint
that changes something takes) and reading them (``GET /v1/audit``).

An entry says who: ``admin:`` and the first 12 hex digits of the SHA-256 of the admin token
that made the change (a fingerprint: it tells two admin tokens apart, as after a rotation of
``BOOKINGCACHE_ADMIN_TOKEN``, and cannot be turned back into the token); what: an action such
as ``tenant.create`` with the tenant, a target (a room, a token's name) and details that name
what changed, never a secret value; when; and from which client address (``api.throttle``'s,
so the trusted proxies' ``X-Forwarded-For`` counts)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from bookingcache.api.deps import TENANT_ID_PATTERN, ContainerDep, Services, require_admin
from bookingcache.api.problems import problem_responses
from bookingcache.api.throttle import AuthThrottle
from bookingcache.store.audit import AuditEntry, AuditRecord

router = APIRouter(
    prefix="/v1/audit",
    tags=["audit"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403),
)


def admin_fingerprint(token: str) -> str:
    """Who an admin change is recorded as: a fingerprint of the admin token."""
    return "admin:" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Auditor:
    """Records the admin changes of one request."""

    def __init__(self, services: Services, actor: str, client: str | None) -> None:
        self._services = services
        self._actor = actor
        self._client = client

    async def record(
        self,
        action: str,
        *,
        tenant: str | None = None,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        """Record a change; ``actor`` when it was not made with the admin token."""
        await self._services.audit.record(
            AuditRecord(
                actor=actor or self._actor,
                action=action,
                client=self._client,
                tenant_id=tenant,
                target=target,
                details=dict(details or {}),
            )
        )


async def _auditor(request: Request, services: ContainerDep) -> Auditor:
    throttle: AuthThrottle = request.app.state.auth_throttle
    return Auditor(
        services,
        admin_fingerprint(services.admin_token),
        throttle.client_address(request.scope),
    )


AuditDep = Annotated[Auditor, Depends(_auditor)]


class AuditEntryOut(BaseModel):
    id: int = Field(description="The entry's place in the log; newer entries have larger ids")
    at: dt.datetime
    actor: str = Field(
        description="Who: 'admin:' and a fingerprint of the admin token (never the token)",
        examples=["admin:3f2a9c0d41be"],
    )
    client: str | None = Field(description="The client address the change came from")
    action: str = Field(examples=["tenant.update", "read_token.revoke"])
    tenant: str | None
    target: str | None = Field(description="What in the tenant: a room, a token's name")
    details: dict[str, Any] = Field(
        description="What changed: field names and values that are no secret"
    )

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        record = entry.record
        return cls(
            id=entry.id,
            at=entry.at,
            actor=record.actor,
            client=record.client,
            action=record.action,
            tenant=record.tenant_id,
            target=record.target,
            details=dict(record.details),
        )


class AuditPage(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first")
    next_before: int | None = Field(
        description="Pass as `before` for the next, older page; null on the last page"
    )


@router.get(
    "",
    response_model=AuditPage,
    summary="Read the audit log of admin changes, newest first",
    responses=problem_responses(422),
)
async def read_audit_log(
    services: ContainerDep,
    tenant: Annotated[
        str | None,
        Query(description="Only this tenant's entries", pattern=TENANT_ID_PATTERN, max_length=63),
    ] = None,
    before: Annotated[
        int | None, Query(description="Only entries older than this id", ge=1, le=2**62)
    ] = None,
    limit: Annotated[int, Query(description="At most this many entries", ge=1, le=1000)] = 100,
) -> AuditPage:
    # A misspelt filter must not read as "no filter" (the whole log would be answered): the
    # API refuses query parameters an operation does not take (api/query.py).
    entries = await services.audit.entries(tenant_id=tenant, before=before, limit=limit)
    next_before = entries[-1].id if len(entries) == limit else None
    return AuditPage(entries=[AuditEntryOut.of(e) for e in entries], next_before=next_before)
