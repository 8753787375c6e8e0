"""The isolation matrix: every operation of the service's OpenAPI document, called with every
credential that must not work, is refused with a documented 401/403/404 and changes nothing.

The operations come from the app's own ``/openapi.json``, so a new endpoint is covered as soon as
it is documented: its path parameters are filled with an existing tenant and room, its required
query parameters and its request body with the smallest values its schema allows (its
``examples`` first). Each operation that takes a token is then called with:

- no token, and malformed ones (another scheme, an empty bearer, a tenant prefix with nothing
  after it, a forged secret part);
- another tenant's read token;
- a revoked read token. The admin API has no operation that regenerates a tenant's read token,
  so the revoked token is the one of a tenant that was deleted and created again under the same
  id (the old token of ``tenant``, which exists again with a new one);
- the read token of a tenant that was deleted for good;
- the tenant's own read token, on the operations that need the admin token.

Each answer must be a problem+json with the status this module expects for that credential, and
that status must be among the operation's documented responses. The database (every table, read
with SQL) must be the same after every call as before the matrix. Each call comes from its own
client address, so that a throttle of failed authentications (per address) never answers in
place of the check under test: 429 is accepted nowhere.

Operations without a token are listed in ``UNAUTHENTICATED`` with the reason; an operation that
appears without a security requirement and is not listed fails the test, and so does a route that
is served but missing from the document. The bearer tokens are also shown not to stand in for the
relay's signature.

Runs on every engine ``database_url`` gives (SQLite, and PostgreSQL when configured).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before included routers were kept nested
    iter_route_contexts = None

from bookingcache.api.availability import authorised_reading
from bookingcache.api.deps import require_admin, require_tenant_reader
from bookingcache.api.stream import stream_reader
from bookingcache.api.subscriptions import require_admin_or_tenant_signature
from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import OrchestrationSettings, Settings
from bookingcache.store.sql.store import SqlStore
from tests.support.api import tenant_body
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.snapshot import snapshot

# Operations that take no bearer token, and why. Each is authenticated some other way or serves
# nothing a tenant owns.
UNAUTHENTICATED: dict[tuple[str, str], str] = {
    ("get", "/healthz"): "liveness probe: answers that the process runs, nothing else",
    ("get", "/readyz"): "readiness probe: answers whether the database is reachable",
    ("get", "/metrics"): "Prometheus scrape: counters without tenant data or secrets "
    "(the secrets scan checks every /metrics answer of the test run)",
    ("post", "/graph/notifications/{tenant}"): "Graph's webhook: each notification is "
    "authenticated by its clientState; the validationToken handshake echoes Graph's own token",
    ("post", "/graph/lifecycle/{tenant}"): "Graph's lifecycle webhook: as the notifications",
    ("post", "/v1/tenants/{tenant}/notifications"): "the connector relay's call: a Standard "
    "Webhooks signature with the tenant's secret (tests/security/test_relay_signatures.py)",
}
# Served but not in the OpenAPI document (FastAPI's documentation pages).
UNDOCUMENTED: dict[tuple[str, str], str] = {
    ("get", "/openapi.json"): "the public API's description",
    ("get", "/docs"): "the API's documentation page (Swagger UI)",
    ("get", "/redoc"): "the API's documentation page (ReDoc)",
    ("get", "/"): "the live availability page: static HTML, it signs in with a read token itself",
    ("get", "/page/{name}"): "the live availability page's scripts, style sheet and icon",
}

# Tables whose rows a refused call may change, with the reason (none today). A throttle that
# counts failed authentications in the database would be listed here.
VOLATILE_TABLES: dict[str, str] = {}

# What each credential hears, by the kind of operation. Adjust here if the rules change.
EXPECTED: dict[str, dict[str, int]] = {
    "no token": {"admin": 401, "reader": 401},
    "other scheme": {"admin": 401, "reader": 401},
    "empty bearer": {"admin": 401, "reader": 401},
    "tenant prefix only": {"admin": 401, "reader": 401},
    "forged secret part": {"admin": 401, "reader": 401},
    "admin token with a suffix": {"admin": 401, "reader": 401},
    "another tenant's read token": {"admin": 403, "reader": 403},
    "revoked read token": {"admin": 401, "reader": 401},
    "deleted tenant's read token": {"admin": 401, "reader": 401},
    "own read token": {"admin": 403},
}

TENANT = "iso-tenant"
OTHER = "iso-other"
GONE = "iso-gone"
ROOM = "r1"
MAILBOX = f"room-1@{TENANT}.example"


# Bodies for the operations whose schema cannot state what a valid body is (the rest are made
# from their schema by ``minimal``).
BODIES: dict[tuple[str, str], Any] = {
    # Either "rooms" or "building", not both, not neither.
    ("post", "/v1/tenants/{tenant}/availability"): {"rooms": [ROOM]},
    # The end after the start.
    ("post", "/v1/tenants/{tenant}/getSchedule"): {
        "schedules": [ROOM],
        "startTime": {"dateTime": "2026-01-05T08:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2026-01-05T18:00:00", "timeZone": "UTC"},
    },
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]
    auth: str  # "admin", "reader" or "none"

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def documented(self) -> set[int]:
        return {int(code) for code in self.spec["responses"] if code.isdigit()}


@dataclass(frozen=True)
class Tokens:
    own: str
    other: str
    revoked: str
    deleted: str


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


# The dependencies that check a token: the admin token only, or a tenant's reader (its read
# token or the admin token). A new guard must be added here.
# The registration of a customer's own subscriptions takes the admin token, or instead the
# tenant's signature (tests/api/test_registration.py refuses the wrong signatures).
ADMIN_GUARDS = {require_admin, require_admin_or_tenant_signature}
READER_GUARDS = {require_tenant_reader, authorised_reading, stream_reader}


def _auth_of(dependant: Dependant) -> str:
    calls = set(_calls(dependant))
    if calls & ADMIN_GUARDS:
        return "admin"
    if calls & READER_GUARDS:
        return "reader"
    return "none"


def _flat_routes(app: FastAPI) -> Iterator[Any]:
    """The app's routes, those of included routers too (FastAPI keeps those nested in recent
    versions; ``iter_route_contexts`` gives each with the dependencies of its inclusion)."""
    if iter_route_contexts is None:
        yield from app.routes
    else:
        yield from iter_route_contexts(app.routes)


def _routes(app: FastAPI) -> dict[tuple[str, str], Dependant | None]:
    """Each served (method, path), with its dependencies if it is an API route."""
    found: dict[tuple[str, str], Dependant | None] = {}
    for route in _flat_routes(app):
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found[(method.lower(), route.path)] = getattr(route, "dependant", None)
    return found


def operations(app: FastAPI, document: dict[str, Any]) -> list[Operation]:
    routes = _routes(app)
    found: list[Operation] = []
    for path, item in document["paths"].items():
        for method, spec in item.items():
            label = f"{method.upper()} {path}"
            dependant = routes.get((method, path))
            assert dependant is not None, f"{label} is not an API route of the app"
            auth = _auth_of(dependant)
            if spec.get("security"):
                assert auth != "none", f"{label}: documents a token, checks none"
            else:
                assert auth == "none", f"{label}: checks a token, documents none"
            found.append(Operation(method, path, spec, auth))
    return found


# --- the smallest valid values of a schema ------------------------------------------------------


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def minimal(schema: dict[str, Any], document: dict[str, Any]) -> Any:
    """A small value ``schema`` accepts: its example if it has one, else the required parts."""
    schema = _resolve(schema, document)
    for key in ("examples", "example"):
        if key in schema:
            return schema[key][0] if key == "examples" else schema[key]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [_resolve(option, document) for option in schema[key]]
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            return minimal(chosen, document)
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal(properties[name], document) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal(schema.get("items", {}), document)] * schema.get("minItems", 0)
    if kind == "string":
        fixed = {
            "date-time": "2026-11-23T09:00:00Z",
            "date": "2026-11-23",
            "email": "room@example.com",
            "uri": "https://example.com",
        }
        if schema.get("format") in fixed:
            return fixed[schema["format"]]
        return "a" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return False
    return None


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, Any]
    content: bytes | None
    content_type: str | None


def call_of(operation: Operation, document: dict[str, Any]) -> Call:
    fill = {"tenant": TENANT, "room": ROOM, "name": "default"}
    url = re.sub(r"\{(\w+)\}", lambda m: fill[m[1]], operation.path)
    params: dict[str, Any] = {}
    for parameter in operation.spec.get("parameters", []):
        assert parameter["in"] != "path" or parameter["name"] in fill, (operation.label, parameter)
        if parameter["in"] == "query" and parameter.get("required"):
            params[parameter["name"]] = minimal(parameter["schema"], document)
    content: bytes | None = None
    content_type: str | None = None
    body = operation.spec.get("requestBody")
    if body is not None:
        media = body["content"]
        content_type = "application/json" if "application/json" in media else next(iter(media))
        described = media[content_type]
        value = BODIES.get((operation.method, operation.path))
        if value is None:
            value = described.get("example", minimal(described.get("schema", {}), document))
        if content_type == "application/json":
            content = httpx.Request("POST", "/", json=value).content
        else:
            content = str(value).encode()
    return Call(operation.method.upper(), url, params, content, content_type)


# --- the app's data ------------------------------------------------------------------------------


_addresses = (f"10.{a}.{b}.{c}" for a, b, c in itertools.product(range(256), repeat=3))


def client_of(app: FastAPI) -> httpx.AsyncClient:
    """A client of ``app`` from an address no other call of the run used."""
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=(next(_addresses), 40000)
    )
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _admin(app: FastAPI, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with client_of(app) as client:
        response = await client.request(method, url, headers=ADMIN, **kwargs)
    assert response.status_code < 300, response.text
    return response


async def _create(app: FastAPI, tenant_id: str) -> str:
    response = await _admin(app, "POST", "/v1/tenants", json=tenant_body(tenant_id))
    token: str = response.json()["secrets"]["read_token"]
    return token


async def _read_availability(app: FastAPI, tenant_id: str, token: str) -> None:
    """A read with ``token`` that works, so that the token is one the service has confirmed
    (and may keep confirmed for a while) before it is revoked."""
    async with client_of(app) as client:
        response = await client.get(
            f"/v1/tenants/{tenant_id}/rooms/{ROOM}/availability",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text


async def _tenant_with_room(app: FastAPI, tenant_id: str) -> str:
    token = await _create(app, tenant_id)
    await _admin(
        app,
        "PUT",
        f"/v1/tenants/{tenant_id}/rooms/{ROOM}",
        json={"mailbox": f"room-1@{tenant_id}.example", "name": "R1"},
    )
    await _read_availability(app, tenant_id, token)
    return token


async def _prepare(app: FastAPI) -> Tokens:
    revoked = await _tenant_with_room(app, TENANT)
    await _admin(app, "DELETE", f"/v1/tenants/{TENANT}")
    own = await _tenant_with_room(app, TENANT)
    assert own != revoked
    other = await _tenant_with_room(app, OTHER)
    deleted = await _tenant_with_room(app, GONE)
    await _admin(app, "DELETE", f"/v1/tenants/{GONE}")
    return Tokens(own=own, other=other, revoked=revoked, deleted=deleted)


def credentials(tokens: Tokens) -> dict[str, dict[str, str]]:
    bearer = "Bearer {}".format
    return {
        "no token": {},
        "other scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "empty bearer": {"Authorization": "Bearer "},
        "tenant prefix only": {"Authorization": bearer(f"{TENANT}.")},
        "forged secret part": {"Authorization": bearer(f"{TENANT}.forged-0123456789abcdef")},
        "admin token with a suffix": {"Authorization": bearer(ADMIN_TOKEN + "x")},
        "another tenant's read token": {"Authorization": bearer(tokens.other)},
        "revoked read token": {"Authorization": bearer(tokens.revoked)},
        "deleted tenant's read token": {"Authorization": bearer(tokens.deleted)},
        "own read token": {"Authorization": bearer(tokens.own)},
    }


# --- the tests ------------------------------------------------------------------------------------


async def _document(app: FastAPI) -> dict[str, Any]:
    async with client_of(app) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_every_operation_refuses_every_wrong_credential_and_changes_nothing(
    app: FastAPI, store: SqlStore
) -> None:
    document = await _document(app)
    tokens = await _prepare(app)
    before = await snapshot(store, leave_out=VOLATILE_TABLES)
    assert before["tenants"], "the matrix runs against existing tenants"
    checked: list[str] = []
    wrong: list[str] = []
    for operation in operations(app, document):
        if operation.auth == "none":
            continue
        call = call_of(operation, document)
        for name, headers in credentials(tokens).items():
            expected = EXPECTED[name].get(operation.auth)
            if expected is None:
                continue
            if call.content_type is not None:
                headers = {**headers, "Content-Type": call.content_type}
            async with client_of(app) as client:
                response = await client.request(
                    call.method, call.url, params=call.params, content=call.content, headers=headers
                )
            label = f"{operation.label} with {name}"
            checked.append(label)
            if response.status_code != expected:
                wrong.append(f"{label}: {response.status_code}, expected {expected}")
            elif response.status_code not in operation.documented() & {401, 403, 404}:
                wrong.append(f"{label}: {response.status_code} is not documented")
            elif not response.headers["content-type"].startswith("application/problem+json"):
                wrong.append(f"{label}: not a problem+json answer")
            elif await snapshot(store, leave_out=VOLATILE_TABLES) != before:
                wrong.append(f"{label}: changed the database")
                before = await snapshot(store, leave_out=VOLATILE_TABLES)
    assert not wrong, "\n".join(wrong)
    guarded = [operation for operation in operations(app, document) if operation.auth != "none"]
    assert {label.split(" with ")[0] for label in checked} == {op.label for op in guarded}
    assert {op.auth for op in guarded} == {"admin", "reader"}


async def test_the_calls_of_the_matrix_are_valid_with_the_right_token(
    settings: Settings, clock: FixedClock
) -> None:
    """The control: each reading operation, called as the matrix calls it but with the tenant's
    own read token, succeeds; so the matrix's refusals are the credentials' doing, not the
    call's. (The management operations are not called this way: they would change things.)
    This app runs the subscription orchestration, which some reading operations report on."""
    app = service_app(
        settings.model_copy(update={"orchestration": OrchestrationSettings()}), clock=clock
    )
    async with app.router.lifespan_context(app):
        document = await _document(app)
        tokens = await _prepare(app)
        for operation in operations(app, document):
            if operation.auth != "reader" or _streams(operation):
                continue
            call = call_of(operation, document)
            headers = {"Authorization": f"Bearer {tokens.own}"}
            if call.content_type is not None:
                headers["Content-Type"] = call.content_type
            async with client_of(app) as client:
                response = await client.request(
                    call.method, call.url, params=call.params, content=call.content, headers=headers
                )
            assert response.status_code < 300, (operation.label, response.text)


def _streams(operation: Operation) -> bool:
    """An answer that never ends (the change stream): an ASGI client would wait for its end
    for ever. tests/stream opens it with the right token and ticket over a socket."""
    success = operation.spec["responses"].get("200", {})
    return "text/event-stream" in success.get("content", {})


async def test_operations_without_a_token_are_the_listed_ones(app: FastAPI) -> None:
    """A new operation without a security requirement, or a served route the document does
    not show, must be added to the lists above with its reason, or fail this test."""
    document = await _document(app)
    unauthenticated = {
        (operation.method, operation.path)
        for operation in operations(app, document)
        if operation.auth == "none"
    }
    assert unauthenticated == set(UNAUTHENTICATED)
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert set(_routes(app)) - documented == set(UNDOCUMENTED)


async def test_a_bearer_token_does_not_stand_in_for_the_relays_signature(
    app: FastAPI, store: SqlStore
) -> None:
    tokens = await _prepare(app)
    before = await snapshot(store, leave_out=VOLATILE_TABLES)
    body = httpx.Request("POST", "/", json={"resync": [MAILBOX]}).content
    for name, headers in {
        "admin token": ADMIN,
        "own read token": {"Authorization": f"Bearer {tokens.own}"},
    }.items():
        async with client_of(app) as client:
            response = await client.post(
                f"/v1/tenants/{TENANT}/notifications",
                content=body,
                headers={**headers, "Content-Type": "application/json"},
            )
        assert response.status_code == 401, (name, response.text)
        assert response.json()["type"].endswith("bad-signature")
    assert await snapshot(store, leave_out=VOLATILE_TABLES) == before
