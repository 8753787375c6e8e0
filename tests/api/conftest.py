"""Fixtures of the API tests: a tenant created through the API (helpers in tests/support)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from bookingcache.api.deps import TenantReader
from tests.support.api import tenant_body
from tests.support.auth import ADMIN


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The commands set up the process's logging; the session's handlers come back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def clock_start() -> dt.datetime:
    return dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def tenant_id() -> str:
    # Unique per test: a PostgreSQL database may be shared by the tests of one run.
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def tenant(client: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    """A created tenant, with its one-time secrets."""
    response = await client.post("/v1/tenants", json=tenant_body(tenant_id), headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
def reader_route(app: FastAPI) -> None:
    """An endpoint guarded like the availability endpoints, to probe the reader dependency."""
    router = APIRouter()

    @router.get("/v1/tenants/{tenant}/whoami")
    async def whoami(tenant: TenantReader) -> dict[str, str]:
        return {"tenant": tenant.id}

    app.include_router(router)
