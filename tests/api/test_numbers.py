"""A number in a JSON body is a number: ``true`` and ``false`` are refused with a 422 naming the
field, and nothing changes (Pydantic alone would read them as 1 and 0)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.auth import ADMIN
from tests.support.problems import assert_problem


@pytest.mark.parametrize("value", [True, False])
async def test_booleans_are_not_numbers(
    client: httpx.AsyncClient, tenant: dict[str, Any], value: bool
) -> None:
    base = f"/v1/tenants/{tenant['id']}"
    reader = {"Authorization": f"Bearer {tenant['secrets']['read_token']}"}
    room = {"mailbox": "r1@contoso.example", "name": "R1"}
    assert (await client.put(f"{base}/rooms/r1", json=room, headers=ADMIN)).status_code == 201
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], str]] = [
        ("PATCH", base, {"staleness_bound_s": value}, ADMIN, "body.staleness_bound_s"),
        ("POST", f"{base}/signing-secret:rotate", {"overlap_s": value}, ADMIN, "body.overlap_s"),
        ("PUT", f"{base}/rooms/r1", {**room, "capacity": value}, ADMIN, "body.capacity"),
        (
            "POST",
            f"{base}/availability",
            {"rooms": ["r1"], "min_free_minutes": value},
            reader,
            "body.min_free_minutes",
        ),
    ]
    for method, url, body, headers, field in cases:
        response = await client.request(method, url, json=body, headers=headers)
        problem = assert_problem(response, 422)
        assert [error["field"] for error in problem["errors"]] == [field], (url, problem)
    # Nothing changed: the room seats no one known, the tenant keeps its bound and its secret.
    linked = (await client.get(f"{base}/rooms/r1", headers=ADMIN)).json()
    assert linked["capacity"] is None
    read = (await client.get(base, headers=ADMIN)).json()
    assert read["staleness_bound_s"] == tenant["staleness_bound_s"]
    # ... and a number is still a number.
    seats = await client.put(f"{base}/rooms/r1", json={**room, "capacity": 8}, headers=ADMIN)
    assert seats.status_code == 200, seats.text
    assert seats.json()["capacity"] == 8
