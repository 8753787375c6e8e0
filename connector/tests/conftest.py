from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache_connector.bootstrap import Connector, build_connector
from bookingcache_connector.config import Settings
from tests.support import secrets_scan

from .fakes import (
    AUTHORITY_HOST,
    CLIENT_ID,
    CLIENT_SECRET,
    GRAPH,
    TENANT_ID,
    FakeClock,
    FakeGraph,
    identity_platform,
)

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SERVICE = "https://service.test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def graph(clock: FakeClock) -> FakeGraph:
    return FakeGraph(clock=clock)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**over: Any) -> Settings:
        values: dict[str, Any] = {
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "authority_host": AUTHORITY_HOST,
            "graph_url": GRAPH,
            "webhook_secret": WEBHOOK_SECRET,
            "state_dir": tmp_path / "state",
            "relay_resync_after_s": 30.0,
            "relay_max_backoff_s": 8.0,
        }
        values.update(over)
        return Settings(**values)

    return make


@pytest.fixture
async def make_connector(
    clock: FakeClock, graph: FakeGraph, make_settings: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Connector]]:
    built: list[Connector] = []

    def make(
        *, service: httpx.AsyncBaseTransport | None = None, secret: str = CLIENT_SECRET, **over: Any
    ) -> Connector:
        if service is not None:
            over.setdefault("service_url", SERVICE)
            over.setdefault("service_tenant", "contoso")
        connector = build_connector(
            make_settings(**over),
            clock=clock,
            graph_transport=graph.transport(),
            service_transport=service,
            msal_transport=identity_platform(secret=secret),
            rng=random.Random(7),
        )
        built.append(connector)
        return connector

    yield make
    for connector in built:
        await connector.aclose()


def pytest_configure(config: pytest.Config) -> None:
    """Scan everything the run lets out for the secrets it made (tests/support/secrets_scan)."""
    secrets_scan.install(config)
