from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import tenant_body
from tests.support.auth import ADMIN, bearer
from tests.support.problems import assert_problem


async def test_management_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tenants")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(await client.get("/v1/tenants", headers=bearer("wrong-token")), 401)
    assert_problem(await client.get("/v1/tenants", headers={"Authorization": "Basic eDp5"}), 401)


async def test_read_token_cannot_manage(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    read = bearer(tenant["secrets"]["read_token"])
    assert_problem(await client.get("/v1/tenants", headers=read), 403)
    assert_problem(await client.get(f"/v1/tenants/{tenant['id']}", headers=read), 403)
    assert_problem(
        await client.put(
            f"/v1/tenants/{tenant['id']}/rooms/r1",
            json={"mailbox": "r1@contoso.com", "name": "R1"},
            headers=read,
        ),
        403,
    )


@pytest.mark.usefixtures("reader_route")
async def test_reader_accepts_own_read_token_and_admin(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    url = f"/v1/tenants/{tenant['id']}/whoami"
    for headers in (bearer(tenant["secrets"]["read_token"]), ADMIN):
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"tenant": tenant["id"]}


@pytest.mark.usefixtures("reader_route")
async def test_reader_refuses_other_tenants_and_forged_tokens(
    client: httpx.AsyncClient, tenant: dict[str, Any], tenant_id: str
) -> None:
    other_id = tenant_id + "-b"
    response = await client.post("/v1/tenants", json=tenant_body(other_id), headers=ADMIN)
    assert response.status_code == 201
    token = tenant["secrets"]["read_token"]
    # A valid read token of another tenant: forbidden, not unauthenticated.
    assert_problem(await client.get(f"/v1/tenants/{other_id}/whoami", headers=bearer(token)), 403)
    # The right tenant prefix with a wrong secret part, or no token at all: 401.
    forged = tenant["id"] + ".not-the-secret"
    url = f"/v1/tenants/{tenant['id']}/whoami"
    assert_problem(await client.get(url, headers=bearer(forged)), 401)
    assert_problem(await client.get(url), 401)
    # Admin asking about an unknown tenant learns it does not exist; a reader does not.
    assert_problem(await client.get("/v1/tenants/nobody/whoami", headers=ADMIN), 404)
    assert_problem(await client.get("/v1/tenants/nobody/whoami", headers=bearer(token)), 403)


@pytest.mark.usefixtures("reader_route")
async def test_read_token_dies_with_its_tenant(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    response = await client.delete(f"/v1/tenants/{tenant['id']}", headers=ADMIN)
    assert response.status_code == 204
    url = f"/v1/tenants/{tenant['id']}/whoami"
    assert_problem(await client.get(url, headers=bearer(tenant["secrets"]["read_token"])), 401)
