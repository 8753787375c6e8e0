"""Every metric the connector exports is explained in its guide and in the operations guide,
and nothing else is: read from a scrape of ``/metrics``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from bookingcache_connector.app import create_app

from .conftest import WEBHOOK_SECRET
from .fakes import FakeGraph
from .receiver import Receiver
from .test_relay import known_subscriptions, relay_connector

REPO = Path(__file__).resolve().parents[2]


def documented(text: str) -> set[str]:
    return set(re.findall(r"^\| `(bookingcache_connector_[a-z_]+)`", text, flags=re.MULTILINE))


async def test_every_exported_metric_is_documented(make_connector: Any, graph: FakeGraph) -> None:
    known_subscriptions(graph)
    connector = relay_connector(make_connector, Receiver(WEBHOOK_SECRET), push_events=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(connector)), base_url="https://c.test"
    ) as http:
        scraped = await http.get("/metrics")
    assert scraped.status_code == 200
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scraped.text, flags=re.MULTILINE))
    exported = {
        name + ("_total" if kind == "counter" and not name.endswith("_total") else "")
        for name, kind in families.items()
    }
    assert all(name.startswith("bookingcache_connector_") for name in exported)
    guide = (REPO / "connector" / "README.md").read_text()
    operations = (REPO / "docs" / "operations.md").read_text()
    section = operations.split("## The connector's health and metrics", 1)[1].split("\n## ")[0]
    assert documented(guide) == exported
    assert documented(section) == exported
