"""Fixtures of the intake tests: the service app over the shared ``database_url`` fixture, with
tenants, rooms, subscriptions and clientState secrets written through the store."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from standardwebhooks import Webhook

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import EventSource, Room, Tenant, TenantSecrets
from bookingcache.store.schema import events, inbox_batches, jobs, subscriptions
from bookingcache.store.sql import SqlStore
from bookingcache.store.subscriptions import SubscriptionRegistry

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"
ADMIN_TOKEN = "admin-token-for-the-intake-tests-0123"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return loaded


def new_secret() -> str:
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode("ascii")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC))


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture
def store(app: FastAPI) -> SqlStore:
    found = app.state.container.store
    assert isinstance(found, SqlStore)
    return found


@pytest.fixture
def registry(store: SqlStore, clock: FixedClock) -> SubscriptionRegistry:
    return SubscriptionRegistry(store, clock=clock)


class Org:
    """A tenant with rooms, as the tests set it up."""

    def __init__(self, tenant_id: str, mailboxes: list[str], secret: str) -> None:
        self.id = tenant_id
        self.mailboxes = mailboxes
        self.secret = secret


async def add_org(
    store: SqlStore,
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


async def inbox_batch_rows(store: SqlStore, tenant_id: str | None = None) -> list[Any]:
    """The inbox's rows, oldest first: one per commit round and tenant and source, each holding
    as many notifications as its ``count`` says."""
    query = sa.select(inbox_batches).order_by(inbox_batches.c.id)
    if tenant_id is not None:
        query = query.where(inbox_batches.c.tenant_id == tenant_id)
    async with store.read() as connection:
        rows = list((await connection.execute(query)).all())
    for row in rows:
        assert row._mapping["count"] == len(row.notifications) > 0, row
    return rows


class Stored(NamedTuple):
    """One accepted notification: its batch's tenant and source and its own entry."""

    tenant_id: str
    source: str
    entry: dict[str, Any]


async def stored_notifications(store: SqlStore, tenant_id: str | None = None) -> list[Stored]:
    """Every accepted notification in the order it was stored."""
    return [
        Stored(row.tenant_id, row.source, entry)
        for row in await inbox_batch_rows(store, tenant_id)
        for entry in row.notifications
    ]


async def job_rows(store: SqlStore) -> list[Any]:
    async with store.read() as connection:
        return list((await connection.execute(sa.select(jobs).order_by(jobs.c.id))).all())


async def subscription_rows(store: SqlStore, tenant_id: str) -> dict[str, Any]:
    async with store.read() as connection:
        rows = await connection.execute(
            sa.select(subscriptions).where(subscriptions.c.tenant_id == tenant_id)
        )
        return {row.mailbox: row for row in rows}


async def event_count(store: SqlStore) -> int:
    async with store.read() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(events)) or 0)


def sign(
    secret: str,
    method: str,
    target: str,
    body: bytes,
    *,
    at: dt.datetime,
    msg_id: str | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers over ``"{METHOD} {target}\\n" + body`` (the contract)."""
    message_id = msg_id or f"msg_{uuid.uuid4().hex}"
    content = f"{method} {target}\n".encode() + body
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=at, data=content.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
