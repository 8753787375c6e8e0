"""Reads that name a list of calendars run one statement text whatever the list's length on
PostgreSQL, so that each pooled connection prepares it once (``store.sql.lists``); SQLite keeps
its expanding ``IN``. Both answer the same."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import Tenant
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from tests.support.tenants import ACME as TENANT

MAILBOXES = ["a@acme.test", "b@acme.test", "c@acme.test"]


@contextmanager
def statements(store: SqlStore) -> Iterator[list[str]]:
    """The text of every statement the store sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def test_calendars_and_events_of_any_number_of_mailboxes_take_one_statement_text(
    store: SqlStore, tenant: Tenant
) -> None:
    start = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    with statements(store) as seen:
        for count in (1, 2, 3):
            wanted = MAILBOXES[:count]
            calendars = await store.list_calendars(TENANT, mailboxes=wanted)
            assert [calendar.mailbox for calendar in calendars] == wanted
            found = await store.events_in_window(TENANT, wanted, start=start, end=end)
            assert found == {mailbox: [] for mailbox in wanted}
    of_calendars = {text for text in seen if "FROM calendars" in text}
    of_events = {text for text in seen if "FROM events" in text}
    if store.dialect == "postgresql":
        assert len(of_calendars) == 1, of_calendars
        assert len(of_events) == 1, of_events
    else:
        assert len(of_calendars) == 3
        assert len(of_events) == 3


async def test_intake_looks_up_any_number_of_subscriptions_with_one_statement_text(
    store: SqlStore, tenant: Tenant, clock: FixedClock
) -> None:
    registry = SqlSubscriptions(store, clock=clock)
    ids = ["sub-1", "sub-2", "sub-3"]
    with statements(store) as seen:
        for count in (1, 2, 3):
            assert await registry.lookup(ids[:count]) == {}
    texts = {text for text in seen if "FROM subscriptions" in text}
    assert len(texts) == (1 if store.dialect == "postgresql" else 3), texts
