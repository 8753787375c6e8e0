"""A tenant's way in and its graph source's access through the admin API (issue 16, part 1):
every contradiction is a 422 that points at the field, a secret goes in and never comes out
again (answers, the audit log, the logs), and the tables hold it only sealed."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from bookingcache.api.deps import services_of
from bookingcache.domain.tenancy import GraphCredential
from bookingcache.store.sql.schema import audit_log, tenants
from bookingcache.store.sql.store import SqlStore
from tests.support.api import tenant_body
from tests.support.auth import ADMIN
from tests.support.problems import assert_problem

DIRECTORY = "6f1d2c3b-4a59-4e7d-8c1b-2a3b4c5d6e7f"
CLIENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OTHER_CLIENT_ID = "1a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CLIENT_SECRET = "Qx8~tenant-own-app-secret-0123456789"
NOT_A_KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
THUMBPRINT = "52B2A1B34A2AB7C4F4F4A9B1E6E77F8E1D2C3B4A"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@pytest.fixture(scope="module")
def private_key() -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def _graph(**fields: Any) -> dict[str, Any]:
    return {"directory_tenant": DIRECTORY, "client_id": CLIENT_ID} | fields


def _store(app: FastAPI) -> SqlStore:
    store = services_of(app).store
    assert isinstance(store, SqlStore)
    return store


def _field(response: httpx.Response) -> str:
    body = assert_problem(response, 422)
    fields = [error["field"] for error in body["errors"]]
    assert fields, body
    return str(fields[0])


async def test_the_way_in_defaults_to_the_event_sources_and_can_be_changed(
    client: httpx.AsyncClient, tenant_id: str
) -> None:
    created = await client.post("/v1/tenants", json=tenant_body(tenant_id), headers=ADMIN)
    assert created.json()["notification_mode"] == "direct"
    assert created.json()["graph"] is None
    pushed = tenant_body(tenant_id + "-p", event_source="push")
    answer = await client.post("/v1/tenants", json=pushed, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    assert answer.json()["notification_mode"] == "relay"
    changed = await client.patch(
        f"/v1/tenants/{tenant_id}", json={"notification_mode": "relay"}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["notification_mode"] == "relay"
    shown = await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)
    assert shown.json()["notification_mode"] == "relay"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_source": "push", "notification_mode": "direct"}, "body.notification_mode"),
        ({"notification_mode": "sideways"}, "body.notification_mode"),
        ({"event_source": "graph"}, "body.graph"),
        (
            {"event_source": "graph", "graph": {"client_id": CLIENT_ID}},
            "body.graph.directory_tenant",
        ),
        (
            {"graph": _graph(directory_tenant="not a domain", client_secret="x")},
            "body.graph.directory_tenant",
        ),
        ({"graph": _graph(client_id="not-a-guid", client_secret="x")}, "body.graph.client_id"),
        ({"graph": _graph()}, "body.graph.client_secret"),
        ({"graph": _graph(client_id=None, client_secret=CLIENT_SECRET)}, "body.graph.client_id"),
        (
            {"graph": {"directory_tenant": DIRECTORY, "client_secret": CLIENT_SECRET}},
            "body.graph.client_id",
        ),
        ({"graph": _graph(client_secret="")}, "body.graph.client_secret"),
        ({"graph": _graph(client_secret="bad\x00secret")}, "body.graph.client_secret"),
        ({"graph": _graph(permission="write")}, "body.graph.permission"),
        ({"graph": _graph(client_secret=CLIENT_SECRET, unknown=1)}, "body.graph.unknown"),
        (
            {"graph": _graph(certificate={"thumbprint": THUMBPRINT})},
            "body.graph.certificate.private_key",
        ),
        (
            {"graph": _graph(certificate={"private_key": NOT_A_KEY, "thumbprint": THUMBPRINT})},
            "body.graph.certificate.private_key",
        ),
        # Event source graph without its own app needs the service's shared one, which these
        # tests' service does not have.
        (
            {"event_source": "graph", "graph": {"directory_tenant": DIRECTORY}},
            "body.graph.client_id",
        ),
    ],
)
async def test_every_bad_combination_is_a_422_that_points_at_the_field(
    client: httpx.AsyncClient, tenant_id: str, body: dict[str, Any], field: str
) -> None:
    created = await client.post("/v1/tenants", json=tenant_body(tenant_id, **body), headers=ADMIN)
    assert _field(created) == field
    assert CLIENT_SECRET not in created.text
    assert (await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)).status_code == 404


async def test_a_certificate_must_be_a_plain_rsa_key_with_a_sha1_thumbprint(
    client: httpx.AsyncClient, tenant_id: str, private_key: str
) -> None:
    weak = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    curve = _pem(ec.generate_private_key(ec.SECP256R1()))
    encrypted = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        .decode("ascii")
    )
    cases = [
        ({"private_key": weak, "thumbprint": THUMBPRINT}, "private_key", "2048"),
        ({"private_key": curve, "thumbprint": THUMBPRINT}, "private_key", "RSA"),
        ({"private_key": encrypted, "thumbprint": THUMBPRINT}, "private_key", "passphrase"),
        ({"private_key": private_key, "thumbprint": "XYZ" * 14}, "thumbprint", "40 hex"),
    ]
    for certificate, where, words in cases:
        body = tenant_body(tenant_id, graph=_graph(certificate=certificate))
        answer = await client.post("/v1/tenants", json=body, headers=ADMIN)
        assert _field(answer) == f"body.graph.certificate.{where}"
        assert words in answer.json()["errors"][0]["message"]
        assert "PRIVATE KEY" not in answer.text
    both = _graph(
        client_secret=CLIENT_SECRET,
        certificate={"private_key": private_key, "thumbprint": THUMBPRINT},
    )
    answer = await client.post(
        "/v1/tenants", json=tenant_body(tenant_id, graph=both), headers=ADMIN
    )
    assert _field(answer) == "body.graph.certificate"
    assert CLIENT_SECRET not in answer.text


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"event_source": "push"}, "body.notification_mode"),
        ({"graph": None}, "body.graph"),
        ({"graph": {"client_id": OTHER_CLIENT_ID}}, "body.graph.client_secret"),
        ({"graph": {"directory_tenant": None}}, "body.graph.directory_tenant"),
        ({"notification_mode": None}, "body"),
    ],
)
async def test_a_patch_that_contradicts_the_tenant_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, tenant_id: str, patch: dict[str, Any], field: str
) -> None:
    body = tenant_body(tenant_id, event_source="graph", graph=_graph(client_secret=CLIENT_SECRET))
    created = await client.post("/v1/tenants", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    before = (await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)).json()
    answer = await client.patch(f"/v1/tenants/{tenant_id}", json=patch, headers=ADMIN)
    assert _field(answer) == field
    assert (await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)).json() == before


async def test_graph_access_is_shown_without_its_secret_and_merged_by_patch(
    client: httpx.AsyncClient, app: FastAPI, tenant_id: str, private_key: str
) -> None:
    body = tenant_body(
        tenant_id,
        event_source="graph",
        graph=_graph(client_secret=CLIENT_SECRET, permission="read_basic"),
    )
    created = await client.post("/v1/tenants", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["graph"] == {
        "directory_tenant": DIRECTORY,
        "client_id": CLIENT_ID,
        "permission": "read_basic",
        "client_secret_set": True,
        "certificate_thumbprint": None,
    }
    store = _store(app)
    assert await store.graph_credential(tenant_id) == GraphCredential(client_secret=CLIENT_SECRET)
    revision = (await store.get_tenant(tenant_id)).graph.revision  # type: ignore[union-attr]
    # Another permission: the secret stays.
    answer = await client.patch(
        f"/v1/tenants/{tenant_id}", json={"graph": {"permission": "read"}}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["graph"]["client_secret_set"] is True
    assert answer.json()["graph"]["permission"] == "read"
    assert await store.graph_credential(tenant_id) == GraphCredential(client_secret=CLIENT_SECRET)
    # A certificate (with a thumbprint written with colons) replaces the secret.
    spaced = ":".join(THUMBPRINT[i : i + 2] for i in range(0, 40, 2)).lower()
    certificate = {"certificate": {"private_key": private_key, "thumbprint": spaced}}
    answer = await client.patch(
        f"/v1/tenants/{tenant_id}", json={"graph": certificate}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["graph"]["client_secret_set"] is False
    assert answer.json()["graph"]["certificate_thumbprint"] == THUMBPRINT
    assert "PRIVATE KEY" not in answer.text
    assert await store.graph_credential(tenant_id) == GraphCredential(
        private_key=private_key, thumbprint=THUMBPRINT
    )
    after = (await store.get_tenant(tenant_id)).graph
    assert after is not None
    assert after.revision == revision + 2
    # Another app needs its own credential, and then gets it.
    other = {"graph": {"client_id": OTHER_CLIENT_ID, "client_secret": CLIENT_SECRET + "2"}}
    answer = await client.patch(f"/v1/tenants/{tenant_id}", json=other, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["graph"]["client_id"] == OTHER_CLIENT_ID
    assert answer.json()["graph"]["certificate_thumbprint"] is None
    # Away from graph, the access may be removed, its secret with it.
    answer = await client.patch(
        f"/v1/tenants/{tenant_id}",
        json={"event_source": "connector", "graph": None},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["graph"] is None
    assert await store.graph_credential(tenant_id) is None


async def test_no_graph_secret_reaches_an_answer_the_audit_log_a_log_or_a_raw_table(
    client: httpx.AsyncClient,
    app: FastAPI,
    tenant_id: str,
    private_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    body = tenant_body(tenant_id, event_source="graph", graph=_graph(client_secret=CLIENT_SECRET))
    for method, path, json in [
        ("POST", "/v1/tenants", body),
        ("PATCH", f"/v1/tenants/{tenant_id}", {"graph": {"client_secret": CLIENT_SECRET + "b"}}),
        (
            "PATCH",
            f"/v1/tenants/{tenant_id}",
            {"graph": {"certificate": {"private_key": private_key, "thumbprint": THUMBPRINT}}},
        ),
        ("PATCH", f"/v1/tenants/{tenant_id}", {"notification_mode": "relay"}),
        ("GET", f"/v1/tenants/{tenant_id}", None),
        ("GET", "/v1/tenants", None),
        ("GET", "/v1/audit", None),
    ]:
        answer = await client.request(method, path, json=json, headers=ADMIN)
        assert answer.status_code < 300, answer.text
        answers.append(answer.text)
    audit = (await client.get("/v1/audit", params={"tenant": tenant_id}, headers=ADMIN)).json()
    actions = [entry["action"] for entry in audit["entries"]]
    assert actions.count("tenant.update") == 3
    credentials = [
        entry["details"]["graph"]["credential"]
        for entry in audit["entries"]
        if "graph" in entry["details"]
    ]
    assert sorted(credentials) == sorted(
        ["client_secret", "client_secret", f"certificate {THUMBPRINT}"]
    )
    modes = [e["details"].get("notification_mode") for e in audit["entries"]]
    assert "relay" in modes
    store = _store(app)
    async with store.read() as conn:
        raw = [str(v) for row in (await conn.execute(sa.select(tenants))).all() for v in row]
        raw += [str(v) for row in (await conn.execute(sa.select(audit_log))).all() for v in row]
    key_body = private_key.splitlines()[1]
    for text in [*answers, *raw, caplog.text]:
        assert CLIENT_SECRET not in text
        assert key_body not in text
    assert await store.graph_credential(tenant_id) == GraphCredential(
        private_key=private_key, thumbprint=THUMBPRINT
    )
