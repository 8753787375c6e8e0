"""A tenant's credentials, managed with the admin token: named read tokens (create: the token is
in that answer only; list: name, created, last used; revoke) and the signing secret's rotation
with an overlap in which the previous secret still verifies. Every change is in the audit log."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from bookingcache.api.audit import AuditDep
from bookingcache.api.deps import StoreDep, TenantIdPath, require_admin
from bookingcache.api.numbers import WholeNumber
from bookingcache.api.problems import problem_responses
from bookingcache.domain.tenancy import ReadTokenInfo

TOKEN_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"  # noqa: S105 (a pattern of names)
DEFAULT_OVERLAP_S = 24 * 3600
MAX_OVERLAP_S = 30 * 24 * 3600

router = APIRouter(
    prefix="/v1/tenants/{tenant}",
    tags=["credentials"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403),
)

TokenName = Annotated[
    str,
    Field(
        pattern=TOKEN_NAME_PATTERN,
        max_length=63,
        examples=["lobby-displays"],
        description="Lower-case letters, digits and dashes; unique within the tenant",
    ),
]
TokenNamePath = Annotated[
    str, Path(description="The read token's name", pattern=TOKEN_NAME_PATTERN, max_length=63)
]


class ReadTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: TokenName


class ReadTokenOut(BaseModel):
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None = Field(
        description="When a process last accepted it; written in batches, so late by up to "
        "BOOKINGCACHE_READ_TOKEN_REFRESH_S (5 s) after the last use; null if never used"
    )

    @classmethod
    def of(cls, info: ReadTokenInfo) -> ReadTokenOut:
        return cls(name=info.name, created_at=info.created_at, last_used_at=info.last_used_at)


class ReadTokenCreated(ReadTokenOut):
    token: str = Field(description="Shown once: the service keeps only its hash")


class ReadTokenList(BaseModel):
    read_tokens: list[ReadTokenOut]


class SigningRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_s: WholeNumber = Field(
        default=DEFAULT_OVERLAP_S,
        ge=0,
        le=MAX_OVERLAP_S,
        description="How long the previous secret keeps verifying (and the service keeps "
        "signing with it too), so the connector can be given the new one meanwhile",
    )


class SigningRotated(BaseModel):
    signing_secret: str = Field(description="The new secret (whsec_...); shown once")
    previous_valid_until: dt.datetime = Field(
        description="Until then the previous secret verifies too; any earlier one no longer"
    )


def new_read_token(tenant_id: str) -> str:
    return f"{tenant_id}.{secrets.token_urlsafe(32)}"


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@router.post(
    "/read-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=ReadTokenCreated,
    summary="Create a named read token; the token is in this answer only",
    responses=problem_responses(404, 409, 422),
)
async def create_read_token(
    tenant: TenantIdPath, body: ReadTokenCreate, store: StoreDep, audit: AuditDep
) -> ReadTokenCreated:
    token = new_read_token(tenant)
    info = await store.create_read_token(tenant, body.name, token)
    await audit.record("read_token.create", tenant=tenant, target=body.name)
    return ReadTokenCreated(**ReadTokenOut.of(info).model_dump(), token=token)


@router.get(
    "/read-tokens",
    response_model=ReadTokenList,
    summary="List a tenant's read tokens: names and use, never the tokens",
    responses=problem_responses(404),
)
async def list_read_tokens(tenant: TenantIdPath, store: StoreDep) -> ReadTokenList:
    return ReadTokenList(
        read_tokens=[ReadTokenOut.of(t) for t in await store.list_read_tokens(tenant)]
    )


@router.delete(
    "/read-tokens/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke a read token; it stops working at once",
    responses=problem_responses(404),
)
async def revoke_read_token(
    tenant: TenantIdPath, name: TokenNamePath, store: StoreDep, audit: AuditDep
) -> Response:
    await store.revoke_read_token(tenant, name)
    await audit.record("read_token.revoke", tenant=tenant, target=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/signing-secret:rotate",
    response_model=SigningRotated,
    summary="Make a new signing secret current; the previous one verifies during an overlap",
    responses=problem_responses(404, 422),
)
async def rotate_signing_secret(
    tenant: TenantIdPath, store: StoreDep, audit: AuditDep, body: SigningRotation | None = None
) -> SigningRotated:
    overlap_s = (body or SigningRotation()).overlap_s
    secret = new_signing_secret()
    until = await store.rotate_signing_secret(
        tenant, secret, overlap=dt.timedelta(seconds=overlap_s)
    )
    await audit.record("signing_secret.rotate", tenant=tenant, details={"overlap_s": overlap_s})
    return SigningRotated(signing_secret=secret, previous_valid_until=until)
