"""Fixtures of the security tests: the service with nothing in the background that writes to
the database (no worker, no subscription orchestration), so that any change a test sees there
is the doing of the calls it makes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import OrchestrationSettings, Settings
from bookingcache.store.sql.store import SqlStore
from tests.support.databases import SECRETS_KEY


@pytest.fixture
def settings(tmp_path: Path, database_url: str, admin_token: str) -> Settings:
    return Settings(
        environment="development",
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=SecretStr(admin_token),
        secrets_key=SecretStr(SECRETS_KEY),
        database_wait_s=0,
        orchestration=OrchestrationSettings(enabled=False),
    )


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[FastAPI]:
    app = service_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def store(app: FastAPI) -> SqlStore:
    """The running app's own store."""
    found = app.state.services.store
    assert isinstance(found, SqlStore)
    return found
