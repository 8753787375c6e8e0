from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from bookingcache.api.deps import services_of
from bookingcache.bootstrap import service_app
from bookingcache.settings import Settings
from bookingcache.store.sql.schema import jobs
from tests.support.api import tenant_body
from tests.support.auth import ADMIN
from tests.support.problems import assert_problem


async def test_create_returns_secrets_once(
    client: httpx.AsyncClient, tenant: dict[str, Any], tenant_id: str
) -> None:
    assert tenant["id"] == tenant_id
    assert tenant["name"] == "Contoso"
    assert tenant["title_policy"] == "hide_private"
    assert tenant["staleness_bound_s"] == 3600
    assert dt.datetime.fromisoformat(tenant["created_at"]) == dt.datetime(
        2026, 11, 23, 9, 0, tzinfo=dt.UTC
    )
    signing = tenant["secrets"]["signing_secret"]
    assert signing.startswith("whsec_")
    assert len(base64.b64decode(signing.removeprefix("whsec_"), validate=True)) == 32
    # The secret is usable as-is by a Standard Webhooks implementation.
    webhook = Webhook(signing)
    now = dt.datetime.now(dt.UTC)
    signature = webhook.sign("msg_1", now, '{"a":1}')
    webhook.verify(
        '{"a":1}',
        {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
    )
    assert tenant["secrets"]["read_token"].startswith(tenant_id + ".")

    shown = (await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)).json()
    assert "secrets" not in shown
    assert signing not in (await client.get("/v1/tenants", headers=ADMIN)).text


async def test_two_tenants_get_different_secrets(client: httpx.AsyncClient, tenant_id: str) -> None:
    a = (await client.post("/v1/tenants", json=tenant_body(tenant_id + "-a"), headers=ADMIN)).json()
    b = (await client.post("/v1/tenants", json=tenant_body(tenant_id + "-b"), headers=ADMIN)).json()
    assert a["secrets"]["signing_secret"] != b["secrets"]["signing_secret"]
    listed = (await client.get("/v1/tenants", headers=ADMIN)).json()["tenants"]
    assert {tenant_id + "-a", tenant_id + "-b"} <= {t["id"] for t in listed}


async def test_duplicate_id_conflicts(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    response = await client.post("/v1/tenants", json=tenant_body(tenant["id"]), headers=ADMIN)
    assert_problem(response, 409)


async def test_windows_time_zone_is_accepted_and_stored_as_iana(
    client: httpx.AsyncClient, tenant_id: str
) -> None:
    body = tenant_body(tenant_id, default_time_zone="W. Europe Standard Time")
    response = await client.post("/v1/tenants", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert response.json()["default_time_zone"] == "Europe/Berlin"


# Each case is refused with a 422 naming the field, and nothing is stored. One app serves all
# cases: these are checks of the HTTP edge, and an app per case would cost more than the check.
BAD_TENANTS: list[tuple[dict[str, Any], str]] = [
    ({"event_source": "fax"}, "body.event_source"),
    ({"connector_url": None}, "body"),
    ({"connector_url": "ftp://connector.example"}, "body.connector_url"),
    ({"connector_url": "not a url"}, "body.connector_url"),
    ({"connector_url": "https://connector.example/\x00"}, "body.connector_url"),
    ({"title_policy": "shout"}, "body.title_policy"),
    ({"default_time_zone": "Mars/Olympus_Mons"}, "body.default_time_zone"),
    ({"staleness_bound_s": 0}, "body.staleness_bound_s"),
    ({"staleness_bound_s": -5}, "body.staleness_bound_s"),
    ({"name": "   "}, "body.name"),
    ({"name": "Con\x00toso"}, "body.name"),
    ({"surprise": 1}, "body.surprise"),
]


async def test_bad_tenant_is_refused(client: httpx.AsyncClient, tenant_id: str) -> None:
    for overrides, field in BAD_TENANTS:
        body = tenant_body(tenant_id, **overrides)
        problem = assert_problem(await client.post("/v1/tenants", json=body, headers=ADMIN), 422)
        assert field in {error["field"] for error in problem["errors"]}, overrides
        assert_problem(await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN), 404)


async def test_push_and_graph_sources_need_no_connector_url(
    client: httpx.AsyncClient, tenant_id: str
) -> None:
    access = {
        "directory_tenant": "contoso.example",
        "client_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "client_secret": "a-client-secret-of-contoso",
    }
    for source, extra in (("push", {}), ("graph", {"graph": access})):
        body = tenant_body(
            f"{tenant_id}-{source}", event_source=source, connector_url=None, **extra
        )
        response = await client.post("/v1/tenants", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        assert response.json()["event_source"] == source


async def test_patch_changes_only_given_fields(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    url = f"/v1/tenants/{tenant['id']}"
    response = await client.patch(
        url, json={"title_policy": "hide", "staleness_bound_s": 600}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["title_policy"] == "hide"
    assert changed["staleness_bound_s"] == 600
    assert changed["name"] == tenant["name"]
    assert changed["connector_url"] == tenant["connector_url"]
    # A new title policy offers a resync of what is cached under the old one.
    assert changed.pop("resync_available") is True
    assert (await client.get(url, headers=ADMIN)).json() == changed
    again = await client.patch(url, json={"title_policy": "hide", "name": "Other"}, headers=ADMIN)
    assert (again.json()["name"], again.json()["resync_available"]) == ("Other", False)


async def test_resync_gives_every_calendar_a_full_resync(
    client: httpx.AsyncClient, tenant: dict[str, Any], app: FastAPI
) -> None:
    url = f"/v1/tenants/{tenant['id']}"
    for room in ("a", "b"):
        linked = await client.put(
            f"{url}/rooms/{room}",
            json={"mailbox": f"room-{room}@contoso.example", "name": room},
            headers=ADMIN,
        )
        assert linked.status_code in (200, 201), linked.text
    response = await client.post(f"{url}/calendars:resync", headers=ADMIN)
    assert response.status_code == 202, response.text
    assert response.json() == {"tenant": tenant["id"], "calendars": 2}
    store = services_of(app).store
    async with store.read() as connection:  # type: ignore[attr-defined]
        rows = (await connection.execute(sa.select(jobs.c.mailbox, jobs.c.kind))).all()
    assert sorted(rows) == [
        ("room-a@contoso.example", "full_resync"),
        ("room-b@contoso.example", "full_resync"),
    ]
    assert_problem(await client.post("/v1/tenants/nobody/calendars:resync", headers=ADMIN), 404)
    assert_problem(await client.post(f"{url}/calendars:resync"), 401)


async def test_patch_keeps_the_connector_rule(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    url = f"/v1/tenants/{tenant['id']}"
    assert_problem(await client.patch(url, json={"connector_url": None}, headers=ADMIN), 422)
    assert_problem(await client.patch(url, json={"name": None}, headers=ADMIN), 422)
    assert_problem(
        await client.patch(url, json={"default_time_zone": "Nowhere"}, headers=ADMIN), 422
    )
    response = await client.patch(
        url,
        json={"event_source": "push", "connector_url": None, "notification_mode": "relay"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json()["connector_url"] is None
    assert_problem(await client.patch(url, json={"event_source": "connector"}, headers=ADMIN), 422)


async def test_delete_tenant(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}"
    assert (await client.delete(url, headers=ADMIN)).status_code == 204
    assert_problem(await client.get(url, headers=ADMIN), 404)
    assert_problem(await client.delete(url, headers=ADMIN), 404)
    assert_problem(await client.patch(url, json={"name": "x"}, headers=ADMIN), 404)


# Outbound URLs the service must not call outside development (contract.outbound).
INTERNAL_CONNECTOR_URLS = [
    "http://connector.contoso.example",
    "https://127.0.0.1",
    "https://127.0.0.1:8080",
    "https://localhost",
    "https://169.254.169.254/",
    "https://[::1]",
    "https://10.0.0.1",
    "https://user:pw@connector.contoso.example",
    "https://[::ffff:127.0.0.1]",
]


async def test_internal_connector_urls_are_refused_outside_development(
    client: httpx.AsyncClient, tenant: dict[str, Any], tenant_id: str
) -> None:
    for url in INTERNAL_CONNECTOR_URLS:
        body = tenant_body(f"{tenant_id}-new", connector_url=url)
        problem = assert_problem(await client.post("/v1/tenants", json=body, headers=ADMIN), 422)
        [error] = problem["errors"]
        assert (error["field"], error["type"]) == ("body.connector_url", "url-not-allowed"), url
        assert "pw" not in problem["detail"]
        assert_problem(await client.get(f"/v1/tenants/{tenant_id}-new", headers=ADMIN), 404)
        patched = await client.patch(
            f"/v1/tenants/{tenant_id}", json={"connector_url": url}, headers=ADMIN
        )
        problem = assert_problem(patched, 422)
        assert problem["errors"][0]["field"] == "body.connector_url"
    kept = await client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)
    assert kept.json()["connector_url"] == tenant["connector_url"]


async def test_internal_connector_urls_are_allowed_in_development(
    settings: Settings, tenant_id: str
) -> None:
    app = service_app(settings.model_copy(update={"environment": "development"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for number, url in enumerate(INTERNAL_CONNECTOR_URLS):
                body = tenant_body(f"{tenant_id}-{number}", connector_url=url)
                created = await client.post("/v1/tenants", json=body, headers=ADMIN)
                assert created.status_code == 201, created.text
                patched = await client.patch(
                    f"/v1/tenants/{tenant_id}-0", json={"connector_url": url}, headers=ADMIN
                )
                assert patched.status_code == 200, patched.text
