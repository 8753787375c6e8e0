"""The emulator's numbers and lists are Graph's documented ones, as restated with their sources in
``testdata/graph-samples/graph-rules.json``; the behaviour behind each is tested where it lives
(test_auth, test_subscriptions, test_calendar_view, test_schedule, test_throttling,
test_request_ids)."""

from __future__ import annotations

from typing import Any

import pytest

from graph_emulator.auth import GRAPH_AUDIENCE, GRAPH_RESOURCES
from graph_emulator.config import EmulatorConfig
from graph_emulator.routes_directory import PLACE_READERS, USER_READERS
from graph_emulator.routes_events import NOT_SELECTABLE_IN_VIEW
from graph_emulator.subscriptions import SUBSCRIPTION_PROPERTIES


@pytest.fixture
def rules(load_sample: Any) -> dict[str, Any]:
    document = load_sample("graph-rules.json")
    for name, rule in document["rules"].items():
        assert rule["source"].startswith("https://learn.microsoft.com/"), name
    return {name: rule["value"] for name, rule in document["rules"].items()}


def test_scope_properties_permissions_and_selects(rules: dict[str, Any]) -> None:
    resource = rules["graph_token_scope"].removesuffix("/.default")
    assert GRAPH_RESOURCES[resource] == GRAPH_AUDIENCE
    assert set(rules["subscription_properties"]) == SUBSCRIPTION_PROPERTIES
    assert set(rules["directory_permissions"]["users"]) == USER_READERS
    assert set(rules["directory_permissions"]["places"]) == PLACE_READERS
    assert set(rules["calendar_view_unselectable"]) == NOT_SELECTABLE_IN_VIEW


def test_limits_are_the_documented_ones(rules: dict[str, Any]) -> None:
    config = EmulatorConfig()
    assert config.schedule_max_window_days == rules["get_schedule_window_days_below"]
    assert config.reauthorize_renew_spacing_s == 60 * rules["reauthorize_renew_spacing_minutes"]
    outlook = rules["outlook_limits_per_app_and_mailbox"]
    assert config.mailbox_concurrency_limit == outlook["concurrent_requests"]
    assert config.mailbox_request_limit == outlook["requests"]
    assert config.mailbox_request_window_s == outlook["window_s"]
    app = rules["global_limit_per_app"]
    assert config.app_request_limit == app["requests"]
    assert config.app_request_window_s == app["window_s"]
    api = rules["subscription_api_limits"]
    assert config.subscription_limit_window_s == api["window_s"]
    for kind in ("writes", "reauthorize", "get", "list"):
        for scope in ("per_app_tenant", "per_app"):
            assert getattr(config, f"subscription_{kind}_{scope}") == api[kind][scope], (
                kind,
                scope,
            )
