"""Fixtures of the intake tests: the service app over the shared ``database_url`` fixture, its
own store, and its subscriptions (helpers in tests/support)."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi import FastAPI

from bookingcache.clock import FixedClock
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions


@pytest.fixture
def clock_start() -> dt.datetime:
    return dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(app: FastAPI) -> SqlStore:
    """The running app's own store."""
    found = app.state.services.store
    assert isinstance(found, SqlStore)
    return found


@pytest.fixture
def registry(store: SqlStore, clock: FixedClock) -> SqlSubscriptions:
    return SqlSubscriptions(store, clock=clock)
