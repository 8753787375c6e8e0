"""The relay call enforces the schema it publishes: ``RelayNotification`` in
``connector/openapi.yaml``. The cases are made from the schema itself: every required property
deleted, every property given each JSON type and, where the schema bounds it, values at and
past its bounds, enums, nulls and extra properties. The schema (a JSON Schema validator) says
whether each document is valid; the service must answer 202 to exactly those it accepts, and a
422 ``invalid-input`` problem that stores nothing to the others."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import sqlalchemy as sa
import yaml  # type: ignore[import-untyped]

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import EventSource
from bookingcache.store.sql.schema import calendars, events
from bookingcache.store.sql.store import SqlStore
from tests.support.inbox import stored_notifications
from tests.support.relay import wire_event
from tests.support.signing import sign
from tests.support.tenants import Org, add_org

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "connector/openapi.yaml").read_text())
COMPONENTS = SPEC["components"]
ROOT = {"$ref": "#/components/schemas/RelayNotification", "components": COMPONENTS}
VALIDATOR = jsonschema_rs.Draft202012Validator(ROOT)
OPERATION = SPEC["paths"]["/v1/tenants/{tenant}/notifications"]["post"]

# One value of each JSON type, with the instants the schema's pattern accepts.
SAMPLES: list[Any] = [None, True, 0, 1.5, "x", "", [], {}, "2026-11-23T09:00:00Z"]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = {**COMPONENTS["schemas"][name], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def valid_call(org: Org) -> dict[str, Any]:
    """A call with every part, all valid."""
    mailbox = org.mailboxes[0]
    return {
        "changes": [{"mailbox": mailbox, "subscriptionId": "sub-0", "changeType": "updated"}],
        "lifecycle": [
            {"mailbox": org.mailboxes[1], "subscriptionId": "sub-1", "lifecycleEvent": "missed"}
        ],
        "resync": [org.mailboxes[2]],
        "windows": [
            {
                "mailbox": mailbox,
                "start": "2026-11-23T00:00:00Z",
                "end": "2026-12-07T00:00:00Z",
                "events": [
                    wire_event("e-1", "2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z"),
                    wire_event("e-2", "2026-11-24T09:00:00Z", "2026-11-24T10:00:00Z"),
                ],
            }
        ],
    }


Path_ = tuple[str | int, ...]


def _replacements(schema: dict[str, Any], value: Any) -> Iterator[tuple[str, Any]]:
    """Values to put where ``schema`` describes ``value``: from the schema's own terms."""
    for sample in SAMPLES:
        yield f"sample {sample!r}", sample
    for option in schema.get("enum", ()):
        yield f"enum {option!r}", option
    if "enum" in schema:
        yield "not in the enum", "exploded"
    if "maxLength" in schema:
        yield "at maxLength", "m" * schema["maxLength"]
        yield "past maxLength", "m" * (schema["maxLength"] + 1)
    if "pattern" in schema and isinstance(value, str):
        yield "with a NUL", value + "\x00"
        yield "with an offset", value.replace("Z", "+00:00")
        yield "with a fraction", value.replace("Z", ".5Z")
    if schema.get("type") == "array" and isinstance(value, list) and value:
        yield "empty", []
        yield "list of a number", [7]


def _cases(
    schema: dict[str, Any], value: Any, path: Path_ = ()
) -> Iterator[tuple[str, Path_, Any]]:
    """(what, where, replacement) for every node of ``value``, guided by ``schema``; a
    replacement ``_DELETE`` deletes the property."""
    schema = _resolve(schema)
    if path:
        for what, replacement in _replacements(schema, value):
            yield what, path, replacement
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        for name in properties:
            if name in value:
                yield f"without {name}", (*path, name), _DELETE
        yield "an extra property", (*path, "extra"), "surprise"
        for name, sub in properties.items():
            if name in value:
                yield from _cases(sub, value[name], (*path, name))
    elif isinstance(value, list) and "items" in schema and value:
        yield from _cases(schema["items"], value[0], (*path, 0))


_DELETE = object()


def _apply(document: dict[str, Any], path: Path_, replacement: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    if replacement is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = replacement
    return changed


async def _snapshot(store: SqlStore) -> tuple[list[Any], list[Any], int]:
    """The cached events and calendars, and how many notifications are stored."""
    async with store.read() as connection:
        rows = [tuple(row) for row in await connection.execute(sa.select(events))]
        cals = [tuple(row) for row in await connection.execute(sa.select(calendars))]
    return sorted(rows, key=repr), sorted(cals, key=repr), len(await stored_notifications(store))


async def _post(
    client: httpx.AsyncClient, org: Org, document: Any, clock: FixedClock
) -> httpx.Response:
    target = f"/v1/tenants/{org.id}/notifications"
    body = json.dumps(document).encode()
    headers = sign(org.secret, "POST", target, body, at=clock.now())
    headers["Content-Type"] = "application/json"
    return await client.post(target, content=body, headers=headers)


def test_the_schema_is_the_one_the_operation_takes() -> None:
    body = OPERATION["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RelayNotification"}
    assert {"202", "400", "401", "413", "415", "422", "503"} <= set(OPERATION["responses"])
    required = COMPONENTS["schemas"]["RelayNotification"]["required"]
    assert set(required) == {"changes", "lifecycle", "resync"}


async def test_the_service_accepts_exactly_what_the_published_schema_accepts(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store, source=EventSource.PUSH)
    base = valid_call(org)
    assert VALIDATOR.is_valid(base)
    # Whole documents the schema refuses, besides the cases below.
    wholes: list[tuple[str, Any]] = [
        ("an empty object", {}),
        ("a list", []),
        ("a string", "changes"),
        ("null", None),
    ]
    cases = [(what, path, _apply(base, path, new)) for what, path, new in _cases(ROOT, base)]
    cases += [(what, (), document) for what, document in wholes]
    assert len(cases) > 200
    disagreements: list[str] = []
    accepted = refused = 0
    for what, path, document in cases:
        expected_valid = VALIDATOR.is_valid(document)
        before = await _snapshot(store)
        clock.advance(dt.timedelta(seconds=1))
        response = await _post(client, org, document, clock)
        where = ".".join(str(p) for p in path) or "body"
        if expected_valid:
            accepted += 1
            if response.status_code != 202:
                disagreements.append(f"{where} {what}: schema accepts, service {response.text}")
            continue
        refused += 1
        problem = response.json()
        if response.status_code != 422 or not problem["type"].endswith(":invalid-input"):
            disagreements.append(f"{where} {what}: schema refuses, service {response.text}")
        elif not problem.get("errors"):
            disagreements.append(f"{where} {what}: the 422 names no field")
        if await _snapshot(store) != before:
            disagreements.append(f"{where} {what}: refused, yet something was stored")
    assert not disagreements, "\n".join(disagreements)
    assert accepted > 30
    assert refused > 100
