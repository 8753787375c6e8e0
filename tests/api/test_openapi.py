"""The OpenAPI document lists every operation with its problems. Schemathesis drives it in
tests/security/test_schemathesis.py."""

from __future__ import annotations

from typing import Any

import httpx

EXPECTED_OPERATIONS = {
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{tenant}"),
    ("patch", "/v1/tenants/{tenant}"),
    ("delete", "/v1/tenants/{tenant}"),
    ("put", "/v1/tenants/{tenant}/rooms/{room}"),
    ("get", "/v1/tenants/{tenant}/rooms/{room}"),
    ("delete", "/v1/tenants/{tenant}/rooms/{room}"),
    ("get", "/v1/tenants/{tenant}/rooms"),
    ("post", "/v1/tenants/{tenant}/rooms:import"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}

RELAY = ("post", "/v1/tenants/{tenant}/notifications")


async def test_openapi_documents_every_operation_and_its_problems(
    client: httpx.AsyncClient,
) -> None:
    document: dict[str, Any] = (await client.get("/openapi.json")).json()
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations >= EXPECTED_OPERATIONS
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    assert response["content"] == {
                        "application/problem+json": {"schema": problem_ref}
                    }, (method, path, code)
            if operation.get("security") or (method, path) == RELAY:
                assert {"401", "429"} <= set(operation["responses"]), (method, path)
                throttled = operation["responses"]["429"]
                assert throttled["headers"]["Retry-After"]["schema"]["type"] == "integer"
            if operation.get("security"):
                assert "403" in operation["responses"], (method, path)
    assert "RoomImport" in document["components"]["schemas"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
