"""Secrets sealed at rest (store.sealing, migration 0008), on both engines: the tables hold no
signing secret or clientState in plain text, a process with the wrong key refuses to start with
a clear error, older keys keep opening what they sealed, and migrating seals what an older
schema stored in plain text."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from bookingcache.cli import main
from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import GraphAccess, GraphCredential, Tenant, TenantSecrets
from bookingcache.errors import SecretsUnreadable
from bookingcache.settings import new_secrets_key
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql import engine as engines
from bookingcache.store.sql.schema import client_states, tenants
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from tests.store.test_engine import old_tenant
from tests.support.databases import SECRETS_KEY, opened_store, sealing_box, writing

SIGNING = "whsec_c2VhbGVkLXNpZ25pbmctc2VjcmV0LW9mLWFjbWU="
READ_TOKEN = "acme.read-token-that-is-only-hashed"
CLIENT_STATE = "a-client-state-of-acme-0123456789"


async def _raw(store: SqlStore) -> tuple[list[str], list[str]]:
    """What the tables hold, as stored: signing secrets, read-token hashes and clientStates."""
    async with store.read() as conn:
        # The columns every revision since 0007 has.
        columns = (tenants.c.id, tenants.c.name, tenants.c.signing_secret, tenants.c.connector_url)
        rows = (await conn.execute(sa.select(*columns))).mappings().all()
        states = (await conn.execute(sa.select(client_states.c.secret))).scalars().all()
    stored = [str(value) for row in rows for value in row.values() if value is not None]
    return stored, [str(state) for state in states]


async def _acme(store: SqlStore, clock: FixedClock) -> SqlSubscriptions:
    await store.create_tenant(Tenant(id="acme", name="Acme"), TenantSecrets(SIGNING, READ_TOKEN))
    subscriptions = SqlSubscriptions(store, clock=clock)
    await subscriptions.rotate_client_state("acme", CLIENT_STATE)
    return subscriptions


async def test_the_tables_hold_no_secret_in_plain_text(store: SqlStore, clock: FixedClock) -> None:
    subscriptions = await _acme(store, clock)
    stored, states = await _raw(store)
    for secret in (SIGNING, READ_TOKEN, CLIENT_STATE):
        assert not any(secret in value for value in stored + states)
    # Sealed, they still open: the service reads back what it must compute with.
    assert await store.get_signing_secret("acme") == SIGNING
    assert await subscriptions.client_states("acme") == [CLIENT_STATE]
    assert await subscriptions.current_client_state("acme") == CLIENT_STATE
    assert await store.check_read_token("acme", READ_TOKEN)
    # Rotating seals the new values too.
    await store.set_tenant_secrets("acme", TenantSecrets(SIGNING + "x", READ_TOKEN + "x"))
    await subscriptions.rotate_client_state("acme", CLIENT_STATE + "x")
    stored, states = await _raw(store)
    assert not any(CLIENT_STATE in value or SIGNING in value for value in stored + states)
    assert await store.get_signing_secret("acme") == SIGNING + "x"
    assert await subscriptions.client_states("acme") == [CLIENT_STATE + "x", CLIENT_STATE]


async def test_a_tenants_graph_credential_is_sealed_at_rest_and_resealed(
    store: SqlStore, database_url: str, clock: FixedClock
) -> None:
    secret = "graph-client-secret-of-acme-0123"
    key = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    )
    access = GraphAccess(directory_tenant="acme.example", client_id="app")
    await store.create_tenant(
        Tenant(id="acme", name="Acme", graph=access),
        TenantSecrets(SIGNING, READ_TOKEN),
        graph_credential=GraphCredential(client_secret=secret),
    )
    await store.create_tenant(
        Tenant(id="bolt", name="Bolt", graph=access),
        TenantSecrets(SIGNING, READ_TOKEN + "b"),
        graph_credential=GraphCredential(private_key=key, thumbprint="AB" * 20),
    )

    async def raw() -> list[str]:
        async with store.read() as conn:
            rows = (await conn.execute(sa.select(tenants))).all()
        return [str(value) for row in rows for value in row]

    assert not any(secret in value or "MIIEvQIBADANBgkqhkiG9w0" in value for value in await raw())
    # A new key put first: reseal seals the credentials again, and only the new key opens them.
    newer = new_secrets_key()
    resealed = await open_store(
        database_url, box=SecretBox([newer, SECRETS_KEY]), migrate=False, clock=clock
    )
    try:
        assert await resealed.reseal_secrets() >= 4  # two signing secrets, two credentials
    finally:
        await resealed.close()
    only_new = await open_store(database_url, box=SecretBox([newer]), migrate=False, clock=clock)
    try:
        assert await only_new.graph_credential("acme") == GraphCredential(client_secret=secret)
        assert await only_new.graph_credential("bolt") == GraphCredential(
            private_key=key, thumbprint="AB" * 20
        )
    finally:
        await only_new.close()
    assert not any(secret in value for value in await raw())


async def test_a_wrong_key_refuses_to_open_the_store(
    store: SqlStore, clock: FixedClock, database_url: str
) -> None:
    await _acme(store, clock)
    wrong = SecretBox([new_secrets_key()])
    with pytest.raises(SecretsUnreadable, match="BOOKINGCACHE_SECRETS_KEY") as raised:
        await open_store(database_url, box=wrong, migrate=False)
    assert SIGNING not in str(raised.value)
    assert SECRETS_KEY not in str(raised.value)


async def test_an_empty_database_opens_with_any_key(database_url: str) -> None:
    opened = await open_store(database_url, box=SecretBox([new_secrets_key()]), migrate=False)
    await opened.close()


async def test_a_new_key_in_front_keeps_the_old_values_open(
    store: SqlStore, clock: FixedClock, database_url: str
) -> None:
    await _acme(store, clock)
    newer = new_secrets_key()
    rotated = SecretBox([newer, SECRETS_KEY])
    opened = await open_store(database_url, box=rotated, migrate=False, clock=clock)
    try:
        assert await opened.get_signing_secret("acme") == SIGNING
        await opened.set_tenant_secrets("acme", TenantSecrets(SIGNING + "2", READ_TOKEN))
        states = SqlSubscriptions(opened, clock=clock)
        assert await states.client_states("acme") == [CLIENT_STATE]
    finally:
        await opened.close()
    # What the newer key sealed does not open with the old key alone.
    with pytest.raises(SecretsUnreadable):
        await store.get_signing_secret("acme")
    assert SecretBox([newer]).open(rotated.reseal(sealing_box().seal("x"))) == "x"


def _migrate(connection: Connection, revision: str, down: bool) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(engines.__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    config.attributes["secret_box"] = sealing_box()
    (command.downgrade if down else command.upgrade)(config, revision)


async def _migrate_to(store: SqlStore, revision: str, *, down: bool = False) -> None:
    async with writing(store.engine) as connection:
        await connection.run_sync(_migrate, revision, down)


async def test_migrating_seals_the_secrets_an_older_schema_kept_in_plain_text(
    database_url: str, clock: FixedClock
) -> None:
    at = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    async with opened_store(database_url, clock) as store:
        await _migrate_to(store, "0007", down=True)
        async with writing(store.engine) as connection:
            await connection.execute(
                tenants.insert(),
                old_tenant(at, title_policy="hide", staleness_bound_s=900, signing_secret=SIGNING),
            )
            await connection.execute(
                client_states.insert(),
                {"tenant_id": "acme", "secret": CLIENT_STATE, "created_at": at},
            )
        stored, states = await _raw(store)
        assert SIGNING in stored  # the older schema's plain text
        await engines.migrate(store.engine, sealing_box())
        stored, states = await _raw(store)
        assert SIGNING not in stored
        assert CLIENT_STATE not in states
        assert await store.get_signing_secret("acme") == SIGNING
        assert await SqlSubscriptions(store, clock=clock).client_states("acme") == [CLIENT_STATE]
        # Downgrading opens them again, for a schema that expects plain text.
        await _migrate_to(store, "0007", down=True)
        stored, states = await _raw(store)
        assert SIGNING in stored
        assert states == [CLIENT_STATE]
        await engines.migrate(store.engine, sealing_box())


async def test_admin_reseal_moves_every_secret_to_the_new_key(
    store: SqlStore,
    clock: FixedClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _acme(store, clock)
    assert main(["admin", "new-key"]) == 0
    newer = capsys.readouterr().out.strip()
    assert SecretBox([newer]).open(SecretBox([newer]).seal("x")) == "x"
    monkeypatch.setenv("BOOKINGCACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOOKINGCACHE_SECRETS_KEY", f"{newer},{SECRETS_KEY}")
    # The command runs its own event loop, as it does from a shell.
    assert await asyncio.to_thread(main, ["admin", "reseal"]) == 0
    assert capsys.readouterr().out == "sealed 2 stored secrets again with the first key\n"
    opened = await open_store(database_url, box=SecretBox([newer]), migrate=False, clock=clock)
    try:
        assert await opened.get_signing_secret("acme") == SIGNING
        assert await SqlSubscriptions(opened, clock=clock).client_states("acme") == [CLIENT_STATE]
    finally:
        await opened.close()
    with pytest.raises(SecretsUnreadable):
        await store.get_signing_secret("acme")
