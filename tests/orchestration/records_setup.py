"""A tenant with linked rooms in the shared ``store`` fixture."""

from __future__ import annotations

from bookingcache.domain.tenancy import Room, Tenant, TenantSecrets
from bookingcache.store.sql import SqlStore

SIGNING_SECRET = "whsec_" + "b3JjaGVzdHJhdGlvbi10ZXN0LXNpZ25pbmctc2VjcmV0"


async def add_tenant(store: SqlStore, *, rooms: int) -> list[str]:
    await store.create_tenant(
        Tenant(id="contoso", name="Contoso", connector_url="https://connector.test"),
        TenantSecrets(signing_secret=SIGNING_SECRET, read_token="read-contoso-0123456789"),
    )
    mailboxes = [f"room-{index}@contoso.example" for index in range(rooms)]
    await store.import_rooms(
        "contoso",
        [
            Room(tenant_id="contoso", room_id=f"r{index}", mailbox=mailbox, name=f"Room {index}")
            for index, mailbox in enumerate(mailboxes)
        ],
    )
    return mailboxes
