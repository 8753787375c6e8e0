"""Fixtures of the orchestration tests: a deployment with short bounds everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bookingcache.orchestration.settings import OrchestrationSettings

from .world import World, deployment

FAST = OrchestrationSettings(
    debounce_s=0.3,
    tick_s=0.2,
    reconverge_every_s=3600,
    backoff_base_s=0.5,
    backoff_max_s=2.0,
    connector_timeout_s=20,
    silent_after=2,
    silent_resync_s=1.0,
    react_min_interval_s=0.5,
)


@pytest.fixture(autouse=True)
def _fast_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    # MSAL (requests) would let these override the emulator's CA bundle.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("BOOKINGCACHE_SYNC_COALESCE_MS", "50")
    monkeypatch.setenv("BOOKINGCACHE_SYNC_POLL_INTERVAL_MS", "50")
    monkeypatch.setenv("BOOKINGCACHE_SYNC_BACKOFF_BASE_S", "0.2")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with deployment(tmp_path, orchestration=FAST) as built:
        yield built
