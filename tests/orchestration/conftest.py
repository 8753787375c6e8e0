"""Fixtures of the orchestration tests: a deployment with short bounds everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .world import FAST, FAST_SYNC, World, deployment


@pytest.fixture(autouse=True)
def _no_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # MSAL (requests) would let these override the emulator's CA bundle.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with deployment(tmp_path, orchestration=FAST, sync=FAST_SYNC) as built:
        yield built
