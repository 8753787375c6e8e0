"""The problem types the docs list are the ones the service answers, both ways: the tables of
docs/api.md and docs/intake.md against ``PROBLEM_TYPES``, ``PROBLEM_TYPES`` against what the code
raises, and the answers where the docs once contradicted each other."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache.api import problems
from bookingcache.api.problems import PROBLEM_TYPES, ProblemError
from bookingcache.store.sql.store import SqlStore
from tests.support.auth import ADMIN
from tests.support.problems import assert_problem
from tests.support.tenants import add_org

ROOT = Path(__file__).resolve().parents[2]
HEADER = re.compile(r"^\|\s*type \(after `urn:bookingcache:problem:`\)\s*\|\s*status\s*\|")
ROW = re.compile(r"^\|\s*`([a-z-]+)`\s*\|\s*(\d{3})\s*\|")


def documented(doc: str) -> list[tuple[str, int]]:
    """The (type, status) rows of every problem-type table in ``doc``."""
    rows: list[tuple[str, int]] = []
    in_table = False
    for line in (ROOT / doc).read_text().splitlines():
        if HEADER.match(line):
            in_table = True
            continue
        if in_table and line.startswith("|"):
            if set(line) <= set("|-: "):
                continue
            match = ROW.match(line)
            assert match is not None, f"{doc}: a row the table cannot be read from: {line}"
            rows.append((match[1], int(match[2])))
        else:
            in_table = False
    assert rows, f"{doc} has no problem-type table"
    return rows


def raised_in_source() -> set[tuple[str, int]]:
    """(type, status) of every ``ProblemError(status, "type", ...)``, ``Refusal(status,
    "type", ...)`` (the HTTP server's) and ``problem_response(..., status, slug="type")``
    written in the service's code."""
    found: set[tuple[str, int]] = set()
    for path in (ROOT / "src/bookingcache").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            constants = [a.value for a in node.args if isinstance(a, ast.Constant)]
            slug = next(
                (
                    k.value.value
                    for k in node.keywords
                    if k.arg == "slug" and isinstance(k.value, ast.Constant)
                ),
                None,
            )
            status = next((c for c in constants if isinstance(c, int)), None)
            if name in ("ProblemError", "Refusal") and len(constants) >= 2:
                slug = constants[1]
            if name in ("ProblemError", "Refusal", "problem_response") and slug and status:
                found.add((str(slug), int(status)))
    return found


def test_docs_api_lists_exactly_the_service_problem_types() -> None:
    rows = documented("docs/api.md")
    assert len(rows) == len(set(rows)), "a type is listed twice"
    assert set(rows) == set(PROBLEM_TYPES.items())


def test_docs_intake_lists_only_problem_types_the_service_has() -> None:
    rows = set(documented("docs/intake.md"))
    assert rows <= set(PROBLEM_TYPES.items()), rows - set(PROBLEM_TYPES.items())
    assert {("malformed-body", 400), ("bad-signature", 401), ("invalid-input", 422)} <= rows


def test_every_registered_type_is_one_the_code_answers() -> None:
    producible = {(slug, status) for _, status, slug in problems._ERROR_MAP}
    producible |= {(slug, status) for status, slug in problems._HTTP_SLUGS.items()}
    producible |= raised_in_source()
    producible.add(("internal-error", 500))  # the unexpected error's answer
    assert producible == set(PROBLEM_TYPES.items())


def test_an_unregistered_problem_type_cannot_be_raised() -> None:
    with pytest.raises(ValueError, match="PROBLEM_TYPES"):
        ProblemError(418, "teapot", "no")
    with pytest.raises(ValueError, match="PROBLEM_TYPES"):
        ProblemError(400, "invalid-input", "the type's status is 422")


async def test_malformed_json_answers_as_documented(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    org = await add_org(store)
    json_type = {"Content-Type": "application/json"}
    management = await client.post("/v1/tenants", content=b"{nope", headers={**ADMIN, **json_type})
    assert assert_problem(management, 422)["type"].endswith(":invalid-input")
    for path in (f"/graph/notifications/{org.id}", f"/graph/lifecycle/{org.id}"):
        webhook = await client.post(path, content=b"{nope", headers=json_type)
        assert assert_problem(webhook, 400)["type"].endswith(":malformed-body")
    unsigned = await client.post(
        f"/v1/tenants/{org.id}/notifications",
        content=json.dumps({"changes": [], "lifecycle": [], "resync": []}).encode(),
        headers=json_type,
    )
    assert assert_problem(unsigned, 401)["type"].endswith(":bad-signature")


async def test_the_openapi_description_documents_statuses_the_types_have(
    client: httpx.AsyncClient,
) -> None:
    document: dict[str, Any] = (await client.get("/openapi.json")).json()
    statuses = set(PROBLEM_TYPES.values())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            errors = {int(code) for code in operation["responses"] if int(code) >= 400}
            assert errors <= statuses, (method, path, errors - statuses)
    relay = document["paths"]["/v1/tenants/{tenant}/notifications"]["post"]["responses"]
    assert {"400", "401", "413", "415", "422", "503"} <= set(relay)
    for kind in ("notifications", "lifecycle"):
        webhook = document["paths"][f"/graph/{kind}/{{tenant}}"]["post"]["responses"]
        assert {"400", "413", "415", "503"} <= set(webhook)
