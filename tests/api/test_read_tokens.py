"""Read tokens are checked in memory: a guess costs no database statement, an unknown tenant is
refused like a wrong token, and a token replaced or a tenant deleted in another process stops
working within ``read_token_refresh_s`` (on every engine)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from bookingcache.bootstrap import Container
from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import EventSource, Tenant, TenantSecrets
from bookingcache.errors import StoreUnavailable
from bookingcache.read.access import MISS_RECHECK, AccessCache
from bookingcache.settings import Settings
from bookingcache.store.port import Store
from bookingcache.store.sql.store import SqlStore
from tests.support.auth import ADMIN, bearer
from tests.support.problems import assert_problem


@contextlib.contextmanager
def counted_statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements the app's store runs inside the block."""
    container: Container = app.state.services
    assert isinstance(container.store, SqlStore)
    engine = container.store.engine.sync_engine
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


@pytest.mark.usefixtures("reader_route")
async def test_guessed_tokens_cost_no_database_statement(
    app: FastAPI, client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    tenant_id = tenant["id"]
    token = tenant["secrets"]["read_token"]
    assert (await client.get(f"/v1/tenants/{tenant_id}/whoami", headers=bearer(token))).is_success
    guesses = [f"{tenant_id}.guess-{n}" for n in range(10)] + [
        f"nobody.guess-{n}" for n in range(5)
    ]
    with counted_statements(app) as statements:
        for n, guess in enumerate(guesses):
            # Each from an address of its own, so none is throttled: all are plain failures.
            transport = httpx.ASGITransport(app=app, client=(f"192.0.2.{n}", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as guesser:
                for url in (
                    f"/v1/tenants/{tenant_id}/whoami",
                    f"/v1/tenants/{tenant_id}/rooms/r1/availability",
                    "/v1/tenants",
                ):
                    assert_problem(await guesser.get(url, headers=bearer(guess)), 401)
    assert statements == []


@pytest.mark.usefixtures("reader_route")
async def test_a_token_naming_an_unknown_tenant_is_refused_like_a_wrong_one(
    app: FastAPI, client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    tenant_id = tenant["id"]
    token = tenant["secrets"]["read_token"]
    secret_part = token.partition(".")[2]
    known = bearer(f"{tenant_id}.{secret_part[::-1]}")
    unknown = bearer(f"{tenant_id}-gone.{secret_part}")
    assert (await client.get(f"/v1/tenants/{tenant_id}/whoami", headers=bearer(token))).is_success
    for url in (
        f"/v1/tenants/{tenant_id}/whoami",
        f"/v1/tenants/{tenant_id}-gone/whoami",
        f"/v1/tenants/{tenant_id}/rooms/r1/availability",
        f"/v1/tenants/{tenant_id}-gone/rooms/r1/availability",
        "/v1/tenants",
    ):
        with counted_statements(app) as statements:
            refused_known = await client.get(url, headers=known)
            refused_unknown = await client.get(url, headers=unknown)
        assert statements == []
        body = assert_problem(refused_known, 401)
        assert assert_problem(refused_unknown, 401) == {**body}
        assert (
            refused_known.headers["www-authenticate"] == refused_unknown.headers["www-authenticate"]
        )
    # A valid token presented for another tenant: 403 whether that one exists or not.
    other = await client.post(
        "/v1/tenants",
        json={"id": f"{tenant_id}-b", "name": "B", "event_source": "push"},
        headers=ADMIN,
    )
    assert other.status_code == 201
    existing = assert_problem(
        await client.get(f"/v1/tenants/{tenant_id}-b/whoami", headers=bearer(token)), 403
    )
    missing = assert_problem(
        await client.get(f"/v1/tenants/{tenant_id}-c/whoami", headers=bearer(token)), 403
    )
    assert existing["detail"].replace(f"{tenant_id}-b", "X") == missing["detail"].replace(
        f"{tenant_id}-c", "X"
    )


@pytest.mark.usefixtures("reader_route")
async def test_changes_in_this_process_count_at_once(
    app: FastAPI, client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    tenant_id = tenant["id"]
    url = f"/v1/tenants/{tenant_id}/whoami"
    old = bearer(tenant["secrets"]["read_token"])
    assert (await client.get(url, headers=old)).status_code == 200
    container: Container = app.state.services
    await container.store.set_tenant_secrets(
        tenant_id, TenantSecrets("whsec_bmV3LXNlY3JldA==", f"{tenant_id}.replaced")
    )
    assert_problem(await client.get(url, headers=old), 401)
    assert (await client.get(url, headers=bearer(f"{tenant_id}.replaced"))).status_code == 200
    assert (await client.delete(f"/v1/tenants/{tenant_id}", headers=ADMIN)).status_code == 204
    assert_problem(await client.get(url, headers=bearer(f"{tenant_id}.replaced")), 401)


@pytest.mark.usefixtures("reader_route")
async def test_changes_in_another_process_count_within_the_refresh_bound(
    client: httpx.AsyncClient,
    tenant: dict[str, Any],
    other_store: SqlStore,
    clock: FixedClock,
    settings: Settings,
) -> None:
    tenant_id = tenant["id"]
    url = f"/v1/tenants/{tenant_id}/whoami"
    old = bearer(tenant["secrets"]["read_token"])
    new = bearer(f"{tenant_id}.replaced-elsewhere")
    assert (await client.get(url, headers=old)).status_code == 200
    await other_store.set_tenant_secrets(
        tenant_id, TenantSecrets("whsec_bmV3LXNlY3JldA==", f"{tenant_id}.replaced-elsewhere")
    )
    # The new token works as soon as a failure may look again ...
    clock.advance(MISS_RECHECK)
    assert (await client.get(url, headers=new)).status_code == 200
    # ... and the old one is refused at the latest once the hashes are read again.
    clock.advance(dt.timedelta(seconds=settings.read_token_refresh_s))
    assert_problem(await client.get(url, headers=old), 401)
    await other_store.delete_tenant(tenant_id)
    clock.advance(dt.timedelta(seconds=settings.read_token_refresh_s))
    assert_problem(await client.get(url, headers=new), 401)
    # A tenant created elsewhere is known within a second.
    await other_store.create_tenant(
        Tenant(id=f"{tenant_id}-new", name="Elsewhere", event_source=EventSource.PUSH),
        TenantSecrets("whsec_Zm9v", f"{tenant_id}-new.token"),
    )
    clock.advance(MISS_RECHECK)
    response = await client.get(
        f"/v1/tenants/{tenant_id}-new/whoami", headers=bearer(f"{tenant_id}-new.token")
    )
    assert response.status_code == 200, response.text


class _TokenHashes:
    """The one store operation the token check uses, counted, and failing on demand (a
    database that went away cannot be had otherwise)."""

    def __init__(self) -> None:
        self.reads = 0
        self.down = False
        self.hashes = {"acme": hashlib.sha256(b"acme.token").hexdigest()}
        self.uses: list[dict[str, dt.datetime]] = []

    async def read_token_owners(self) -> dict[str, str]:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("the database is away")
        return {digest: tenant for tenant, digest in self.hashes.items()}

    async def note_read_tokens_used(self, uses: Mapping[str, dt.datetime]) -> None:
        if self.down:
            raise StoreUnavailable("the database is away")
        self.uses.append(dict(uses))


async def test_failing_tokens_read_the_hashes_at_most_once_a_second_even_without_a_database(
    clock: FixedClock,
) -> None:
    store = _TokenHashes()
    access = AccessCache(
        cast(Store, store), clock, ttl=dt.timedelta(seconds=1), token_refresh=dt.timedelta(hours=1)
    )
    assert await access.read_token_valid("acme", "acme.token")
    for n in range(20):
        assert not await access.read_token_valid("acme", f"acme.guess-{n}")
        assert not await access.read_token_valid("nobody", f"nobody.guess-{n}")
    assert store.reads == 1
    clock.advance(MISS_RECHECK)
    store.down = True
    for n in range(20):
        assert not await access.read_token_valid("acme", f"acme.guess-{n}")
    assert store.reads == 2
    assert await access.read_token_valid("acme", "acme.token")
    clock.advance(MISS_RECHECK)
    store.down = False
    store.hashes["globex"] = hashlib.sha256(b"globex.token").hexdigest()
    assert await access.read_token_valid("globex", "globex.token")
    assert store.reads == 3
    # The uses noted meanwhile were written with that read, once the database was back.
    assert store.uses == [{hashlib.sha256(b"acme.token").hexdigest(): clock.now() - MISS_RECHECK}]
