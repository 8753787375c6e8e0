"""Tenants with linked rooms, written straight into a store as the tests start from them."""

from __future__ import annotations

import base64
import uuid

from bookingcache.domain.tenancy import EventSource, GraphAccess, Room, Tenant, TenantSecrets
from bookingcache.store.port import Store

SIGNING_SECRET = "whsec_" + "c3luYy10ZXN0LXNpZ25pbmctc2VjcmV0LTMyYnl0ZXM="
TENANT = "contoso"
# The store contract suite's tenant (tests/store/conftest.py).
ACME = "acme"
ACME_READ_TOKEN = "acme.read-token-1"
ACME_SIGNING_SECRET = "whsec_c2lnbmluZy1zZWNyZXQtb2YtYWNtZQ=="


async def add_tenant(
    store: Store,
    tenant_id: str = TENANT,
    *,
    rooms: int = 3,
    source: EventSource = EventSource.CONNECTOR,
    connector_url: str | None = "https://connector.test",
    time_zone: str = "UTC",
    graph: GraphAccess | None = None,
) -> list[str]:
    """Create a tenant with ``rooms`` rooms; returns their mailboxes."""
    await store.create_tenant(
        Tenant(
            id=tenant_id,
            name=tenant_id.title(),
            event_source=source,
            connector_url=connector_url,
            default_time_zone=time_zone,
            graph=graph,
        ),
        TenantSecrets(signing_secret=SIGNING_SECRET, read_token=f"read-{tenant_id}-0123456789"),
    )
    mailboxes = [f"room-{index}@{tenant_id}.example" for index in range(rooms)]
    await store.import_rooms(
        tenant_id,
        [
            Room(tenant_id=tenant_id, room_id=f"r{index}", mailbox=mailbox, name=f"Room {index}")
            for index, mailbox in enumerate(mailboxes)
        ],
    )
    return mailboxes


def new_secret() -> str:
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode("ascii")


class Org:
    """A tenant with rooms, as the tests set it up."""

    def __init__(self, tenant_id: str, mailboxes: list[str], secret: str) -> None:
        self.id = tenant_id
        self.mailboxes = mailboxes
        self.secret = secret


async def add_org(
    store: Store,
    *,
    rooms: int = 3,
    source: EventSource = EventSource.CONNECTOR,
    connector_url: str | None = "https://connector.test",
) -> Org:
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    secret = new_secret()
    await store.create_tenant(
        Tenant(id=tenant_id, name=tenant_id, event_source=source, connector_url=connector_url),
        TenantSecrets(signing_secret=secret, read_token=f"{tenant_id}.read-token-0123456789"),
    )
    mailboxes = [f"room-{index}@{tenant_id}.example" for index in range(rooms)]
    await store.import_rooms(
        tenant_id,
        [
            Room(tenant_id=tenant_id, room_id=f"r{i}", mailbox=mailbox, name=f"Room {i}")
            for i, mailbox in enumerate(mailboxes)
        ],
    )
    return Org(tenant_id, mailboxes, secret)
