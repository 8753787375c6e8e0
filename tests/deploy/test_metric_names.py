"""Every metric the dashboard (deploy/grafana/bookingcache.json) and the alert rules
(deploy/prometheus/alerts.yml) query is one the service exports, and docs/operations.md
explains every metric it exports and no other.

What is exported is read from the real ``/metrics`` of a running API process and of a running
worker's metrics port, on PostgreSQL (where the store's notices add their own), not from a list
kept by hand."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bookingcache.api.operations import operations_app
from bookingcache.bootstrap import open_worker, service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "bookingcache.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
OPERATIONS = REPO / "docs" / "operations.md"
# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


def _families(text: str) -> dict[str, str]:
    """Metric family name -> type, of a Prometheus exposition."""
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    # The parser reads an unlabelled counter's or histogram's ``_created`` as a gauge of its own.
    return {
        name: kind
        for name, kind in families.items()
        if not (name.endswith("_created") and name.removesuffix("_created") in families)
    }


@pytest.fixture
async def exported(settings: Settings, clock: FixedClock, database_url: str) -> dict[str, str]:
    """The families an API process and a worker serve, by type."""
    if database_url.startswith("sqlite"):
        pytest.skip("the store's notices, and so their metrics, exist on PostgreSQL only")
    families: dict[str, str] = {}
    app: FastAPI = service_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            families |= _families((await client.get("/metrics")).text)
    worker = await open_worker(settings, clock=clock)
    try:
        transport = httpx.ASGITransport(app=operations_app(worker))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            families |= _families((await client.get("/metrics")).text)
    finally:
        await worker.close()
    return families


def _series_names(families: dict[str, str]) -> set[str]:
    return {name + suffix for name, kind in families.items() for suffix in _SUFFIXES[kind]}


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    text = _STRINGS.sub(" ", expression)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGES.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        if text[match.start() - 1 : match.start()].isdigit():
            continue  # an exponent or a unit of a number
        names.add(match.group())
    return names


def _dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def _alert_expressions() -> Iterator[str]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield str(rule["expr"])


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"x|y"}[5m]))) > 1e3'
    ) == {"a_bucket"}
    assert metric_names("absent(up{job='w'} == 1) or b / ignoring(x) c") == {"up", "b", "c"}


@pytest.mark.parametrize(
    ("what", "expressions"),
    [("the dashboard", _dashboard_expressions), ("the alert rules", _alert_expressions)],
)
def test_every_queried_metric_is_exported(
    exported: dict[str, str], what: str, expressions: object
) -> None:
    assert callable(expressions)
    series = _series_names(exported) | PROMETHEUS_OWN
    queried: set[str] = set()
    for expression in expressions():
        queried |= metric_names(expression)
    assert queried, f"{what} query nothing"
    assert queried <= series, f"{what} query what the service does not export"


def test_the_operations_guide_explains_every_exported_metric(exported: dict[str, str]) -> None:
    section = OPERATIONS.read_text().split("## What each metric means", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(bookingcache_[a-z_]+)", section, flags=re.MULTILINE))
    exposed = {name + ("_total" if kind == "counter" else "") for name, kind in exported.items()}
    assert documented == exposed
