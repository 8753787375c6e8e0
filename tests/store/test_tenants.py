"""Tenants: create, read, change, delete (with everything they own), secrets."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import (
    EventSource,
    GraphAccess,
    GraphCredential,
    GraphPermission,
    NotificationMode,
    Room,
    Tenant,
    TenantSecrets,
    TitlePolicy,
)
from bookingcache.errors import Conflict, InvalidInput, NotFound
from bookingcache.store.sql import schema
from bookingcache.store.sql.store import SqlStore
from tests.support.tenants import ACME as TENANT
from tests.support.tenants import ACME_READ_TOKEN as READ_TOKEN
from tests.support.tenants import ACME_SIGNING_SECRET as SIGNING_SECRET

DAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


async def test_create_and_get_round_trip_every_field(store: SqlStore, clock: FixedClock) -> None:
    tenant = Tenant(
        id="globex",
        name="Globex",
        event_source=EventSource.GRAPH,
        connector_url="https://connector.globex.test/api",
        title_policy=TitlePolicy.SHOW,
        default_time_zone="America/New_York",
        staleness_bound_s=900,
        notification_mode=NotificationMode.RELAY,
        graph=GraphAccess(
            directory_tenant="globex.example", client_id="app", permission=GraphPermission.READ
        ),
    )
    created = await store.create_tenant(
        tenant,
        TenantSecrets("whsec_Z2xvYmV4", "globex.token"),
        graph_credential=GraphCredential(client_secret="globex-app-secret"),
    )

    assert created.created_at == clock.now()
    assert await store.get_tenant("globex") == created
    assert created == Tenant(
        id="globex",
        name="Globex",
        event_source=EventSource.GRAPH,
        connector_url="https://connector.globex.test/api",
        title_policy=TitlePolicy.SHOW,
        default_time_zone="America/New_York",
        staleness_bound_s=900,
        created_at=clock.now(),
        notification_mode=NotificationMode.RELAY,
        graph=GraphAccess(
            directory_tenant="globex.example",
            client_id="app",
            permission=GraphPermission.READ,
            client_secret_set=True,
        ),
    )
    assert await store.graph_credential("globex") == GraphCredential(
        client_secret="globex-app-secret"
    )


async def test_a_tenant_without_a_way_in_gets_its_event_sources_default(store: SqlStore) -> None:
    secrets = TenantSecrets("whsec_Z2xvYmV4", "t.token")
    pushed = await store.create_tenant(
        Tenant(id="p", name="P", event_source=EventSource.PUSH), secrets
    )
    plain = await store.create_tenant(Tenant(id="c", name="C"), TenantSecrets("whsec_Yw==", "c.t"))
    assert pushed.notification_mode is NotificationMode.RELAY
    assert plain.notification_mode is NotificationMode.DIRECT


async def test_each_change_of_the_graph_access_bumps_its_revision(store: SqlStore) -> None:
    access = GraphAccess(directory_tenant="initech.example")
    await store.create_tenant(
        Tenant(id="initech", name="Initech", graph=access), TenantSecrets("whsec_aW5p", "i.t")
    )
    assert (await store.get_tenant("initech")).graph == access
    await store.update_tenant("initech", {"name": "Initech AG"})
    assert (await store.get_tenant("initech")).graph == access  # other fields: no new revision
    own = GraphAccess(directory_tenant="initech.example", client_id="app")
    secret = GraphCredential(client_secret="initech-secret-1")
    await store.update_tenant("initech", {"graph": own, "graph_credential": secret})
    first = (await store.get_tenant("initech")).graph
    assert first is not None
    assert (first.revision, first.client_secret_set) == (1, True)
    key = GraphCredential(private_key="initech's private key, PEM", thumbprint="AB" * 20)
    await store.update_tenant("initech", {"graph_credential": key})
    second = (await store.get_tenant("initech")).graph
    assert second is not None
    assert (second.revision, second.client_secret_set) == (2, False)
    assert second.certificate_thumbprint == "AB" * 20
    assert await store.graph_credential("initech") == key
    await store.update_tenant("initech", {"graph": None})
    assert (await store.get_tenant("initech")).graph is None
    assert await store.graph_credential("initech") is None
    with pytest.raises(NotFound):
        await store.graph_credential("nobody")


async def test_duplicate_tenant_is_a_conflict_and_keeps_the_first(
    store: SqlStore, tenant: Tenant
) -> None:
    with pytest.raises(Conflict):
        await store.create_tenant(
            Tenant(id=TENANT, name="Impostor"), TenantSecrets("whsec_b3RoZXI=", "acme.other")
        )
    assert (await store.get_tenant(TENANT)).name == "Acme"
    assert await store.check_read_token(TENANT, READ_TOKEN)


async def test_unknown_tenant_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await store.get_tenant("nobody")
    with pytest.raises(NotFound):
        await store.update_tenant("nobody", {"name": "X"})
    with pytest.raises(NotFound):
        await store.delete_tenant("nobody")
    with pytest.raises(NotFound):
        await store.get_signing_secret("nobody")
    with pytest.raises(NotFound):
        await store.check_read_token("nobody", "nobody.token")


async def test_list_tenants_in_id_order(store: SqlStore) -> None:
    for tenant_id in ("zeta", "alpha", "mid"):
        await store.create_tenant(
            Tenant(id=tenant_id, name=tenant_id.title()),
            TenantSecrets("whsec_eA==", f"{tenant_id}.t"),
        )
    assert [t.id for t in await store.list_tenants()] == ["alpha", "mid", "zeta"]


async def test_update_tenant_changes_only_named_fields(store: SqlStore, tenant: Tenant) -> None:
    updated = await store.update_tenant(
        TENANT, {"title_policy": "hide", "event_source": EventSource.PUSH, "connector_url": None}
    )
    windows_zone = await store.update_tenant(TENANT, {"default_time_zone": "Pacific Standard Time"})
    assert windows_zone.default_time_zone == "Pacific Standard Time"
    updated = await store.update_tenant(TENANT, {"default_time_zone": "Europe/Berlin"})
    assert updated.title_policy is TitlePolicy.HIDE
    assert updated.event_source is EventSource.PUSH
    assert updated.name == "Acme"
    assert updated.default_time_zone == "Europe/Berlin"
    assert await store.get_tenant(TENANT) == updated


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "other"},
        {"created_at": DAY},
        {"title_policy": "sometimes"},
        {"event_source": "carrier-pigeon"},
        {"staleness_bound_s": 0},
        {"staleness_bound_s": "60"},
        {"staleness_bound_s": 2**31},
        {"name": ""},
        {"name": "N" * 301},
        {"default_time_zone": "Mars/Olympus_Mons"},
        {"default_time_zone": "Europe/Berlin" * 10},
        {"unknown": 1},
    ],
)
async def test_bad_tenant_changes_are_refused_and_change_nothing(
    store: SqlStore, tenant: Tenant, changes: dict[str, object]
) -> None:
    with pytest.raises(InvalidInput):
        await store.update_tenant(TENANT, changes)
    assert await store.get_tenant(TENANT) == tenant


async def test_read_token_is_stored_only_as_its_hash(store: SqlStore, tenant: Tenant) -> None:
    assert await store.check_read_token(TENANT, READ_TOKEN)
    assert not await store.check_read_token(TENANT, READ_TOKEN + "x")
    assert not await store.check_read_token(TENANT, "")
    async with store.read() as conn:
        stored = (
            await conn.execute(
                select(schema.read_tokens.c.name, schema.read_tokens.c.token_sha256).where(
                    schema.read_tokens.c.tenant_id == TENANT
                )
            )
        ).all()
    assert [tuple(row) for row in stored] == [
        ("default", hashlib.sha256(READ_TOKEN.encode()).hexdigest())
    ]
    assert await store.get_signing_secret(TENANT) == SIGNING_SECRET


async def test_secrets_can_be_rotated(store: SqlStore, tenant: Tenant) -> None:
    await store.set_tenant_secrets(TENANT, TenantSecrets("whsec_bmV3", "acme.new-token"))
    assert await store.get_signing_secret(TENANT) == "whsec_bmV3"
    assert await store.check_read_token(TENANT, "acme.new-token")
    assert not await store.check_read_token(TENANT, READ_TOKEN)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_read_token_owners_are_read_in_one_go(store: SqlStore, tenant: Tenant) -> None:
    await store.create_tenant(
        Tenant(id="globex", name="Globex", event_source=EventSource.PUSH),
        TenantSecrets("whsec_Z2xvYmV4", "globex.token"),
    )
    await store.create_read_token("globex", "lobby", "globex.lobby")
    assert await store.read_token_owners() == {
        _digest(READ_TOKEN): TENANT,
        _digest("globex.token"): "globex",
        _digest("globex.lobby"): "globex",
    }
    await store.set_tenant_secrets("globex", TenantSecrets("whsec_bmV3", "globex.new"))
    await store.delete_tenant(TENANT)
    assert await store.read_token_owners() == {_digest("globex.new"): "globex"}


async def test_named_read_tokens_are_created_listed_used_and_revoked(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    created = await store.create_read_token(TENANT, "lobby", "acme.lobby-token")
    assert (created.name, created.created_at, created.last_used_at) == ("lobby", clock.now(), None)
    assert await store.check_read_token(TENANT, "acme.lobby-token")
    assert await store.check_read_token(TENANT, READ_TOKEN)
    with pytest.raises(Conflict):
        await store.create_read_token(TENANT, "lobby", "acme.other")
    with pytest.raises(NotFound):
        await store.create_read_token("nobody", "lobby", "nobody.x")
    used = clock.now() + dt.timedelta(minutes=3)
    await store.note_read_tokens_used({_digest("acme.lobby-token"): used})
    # An earlier use than the one stored changes nothing.
    await store.note_read_tokens_used({_digest("acme.lobby-token"): clock.now()})
    listed = await store.list_read_tokens(TENANT)
    assert [(t.name, t.last_used_at) for t in listed] == [("default", None), ("lobby", used)]
    await store.revoke_read_token(TENANT, "default")
    assert not await store.check_read_token(TENANT, READ_TOKEN)
    assert await store.check_read_token(TENANT, "acme.lobby-token")
    with pytest.raises(NotFound):
        await store.revoke_read_token(TENANT, "default")
    with pytest.raises(NotFound):
        await store.list_read_tokens("nobody")
    async with store.read() as conn:
        stored = list((await conn.execute(select(schema.read_tokens))).mappings())
    assert not any("acme.lobby-token" in str(value) for row in stored for value in row.values())


async def test_signing_secret_rotation_keeps_the_previous_one_for_the_overlap(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    until = await store.rotate_signing_secret(
        TENANT, "whsec_bmV3LXNlY3JldA==", overlap=dt.timedelta(hours=2)
    )
    assert until == clock.now() + dt.timedelta(hours=2)
    assert await store.get_signing_secret(TENANT) == "whsec_bmV3LXNlY3JldA=="
    assert await store.signing_secrets(TENANT) == ["whsec_bmV3LXNlY3JldA==", SIGNING_SECRET]
    clock.advance(dt.timedelta(hours=2))
    assert await store.signing_secrets(TENANT) == ["whsec_bmV3LXNlY3JldA=="]
    # A second rotation replaces the previous secret: only the last two ever verify.
    await store.rotate_signing_secret(TENANT, "whsec_dGhpcmQ=", overlap=dt.timedelta(hours=1))
    assert await store.signing_secrets(TENANT) == ["whsec_dGhpcmQ=", "whsec_bmV3LXNlY3JldA=="]
    with pytest.raises(NotFound):
        await store.rotate_signing_secret("nobody", "whsec_eA==", overlap=dt.timedelta(0))
    with pytest.raises(NotFound):
        await store.signing_secrets("nobody")


async def test_tenants_listeners_hear_every_committed_tenant_write(
    store: SqlStore, tenant: Tenant
) -> None:
    heard: list[str] = []
    store.add_tenants_listener(heard.append)
    await store.create_tenant(
        Tenant(id="globex", name="Globex", event_source=EventSource.PUSH),
        TenantSecrets("whsec_Z2xvYmV4", "globex.token"),
    )
    await store.update_tenant(TENANT, {"name": "Acme Inc"})
    await store.set_tenant_secrets(TENANT, TenantSecrets("whsec_bmV3", "acme.new-token"))
    await store.delete_tenant("globex")
    with pytest.raises(NotFound):
        await store.set_tenant_secrets("globex", TenantSecrets("whsec_bmV3", "globex.new"))
    with pytest.raises(Conflict):
        await store.create_tenant(
            Tenant(id=TENANT, name="Again", event_source=EventSource.PUSH),
            TenantSecrets("whsec_Z2xvYmV4", "acme.again"),
        )
    assert heard == ["globex", TENANT, TENANT, "globex"]
    store.remove_tenants_listener(heard.append)
    await store.delete_tenant(TENANT)
    assert heard == ["globex", TENANT, TENANT, "globex"]


async def _count(store: SqlStore, table: str, tenant_id: str) -> int:
    async with store.read() as conn:
        result = await conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant_id}
        )
        return int(result.scalar_one())


async def test_delete_tenant_removes_everything_it_owns(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    other = await store.create_tenant(
        Tenant(id="other", name="Other"), TenantSecrets("whsec_eA==", "other.t")
    )
    now = clock.now()
    for tenant_id, mailbox in ((TENANT, "a@acme.test"), (other.id, "x@other.test")):
        if tenant_id == other.id:
            await store.put_room(Room(tenant_id, "x", mailbox, "X"))
        await store.replace_window(
            tenant_id,
            mailbox,
            window_start=DAY,
            window_end=DAY + dt.timedelta(days=1),
            events=[BasicEvent("e1", DAY + dt.timedelta(hours=9), DAY + dt.timedelta(hours=10))],
            synced_at=now,
        )

        def fill(conn: Connection, tenant_id: str = tenant_id, mailbox: str = mailbox) -> None:
            conn.execute(
                insert(schema.inbox_batches),
                {
                    "tenant_id": tenant_id,
                    "received_at": now,
                    "source": "alt1",
                    "count": 1,
                    "notifications": [{"kind": "change", "mailbox": mailbox}],
                },
            )
            conn.execute(
                insert(schema.jobs),
                {
                    "tenant_id": tenant_id,
                    "mailbox": mailbox,
                    "kind": "refresh",
                    "due_at": now,
                    "created_at": now,
                },
            )
            conn.execute(
                insert(schema.subscriptions),
                {"tenant_id": tenant_id, "mailbox": mailbox, "status": "ok", "updated_at": now},
            )
            conn.execute(
                insert(schema.client_states),
                {"tenant_id": tenant_id, "secret": "s3cr3t", "created_at": now},
            )

        await store.transaction(fill)
    seq_before = await store.last_change_seq()

    await store.delete_tenant(TENANT)

    with pytest.raises(NotFound):
        await store.get_tenant(TENANT)
    owned = (
        "rooms",
        "calendars",
        "events",
        "inbox_batches",
        "jobs",
        "subscriptions",
        "client_states",
    )
    for table in owned:
        assert await _count(store, table, TENANT) == 0, table
        assert await _count(store, table, other.id) >= 1, table
    # Read models in other processes learn of the eviction through the feed.
    evicted = await store.changes_since(seq_before)
    assert sorted(c.mailbox for c in evicted) == ["a@acme.test", "b@acme.test", "c@acme.test"]
    assert {c.tenant_id for c in evicted} == {TENANT}


async def test_tenants_the_store_cannot_hold_are_refused(store: SqlStore) -> None:
    for bad in (
        Tenant(id="", name="X"),
        Tenant(id="x" * 201, name="X"),
        Tenant(id="x", name="X" * 301),
        Tenant(id="x", name="X", default_time_zone="Nowhere/Special"),
    ):
        with pytest.raises(InvalidInput):
            await store.create_tenant(bad, TenantSecrets("whsec_eA==", "t"))
    async with store.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(schema.tenants))).scalar() == 0
