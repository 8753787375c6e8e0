"""The written contract and the code agree on the shapes that cross the tenant boundary."""

from __future__ import annotations

from pathlib import Path

import yaml  # type: ignore[import-untyped]

from bookingcache_connector.events import BASIC_FIELDS, EVENT_TYPES, SENSITIVITY, SHOW_AS

SPEC = yaml.safe_load((Path(__file__).resolve().parents[1] / "openapi.yaml").read_text())
SCHEMAS = SPEC["components"]["schemas"]


def test_basic_event_schema_is_the_allowlist() -> None:
    event = SCHEMAS["BasicEvent"]
    assert event["additionalProperties"] is False
    assert tuple(event["required"]) == BASIC_FIELDS
    assert tuple(event["properties"]) == BASIC_FIELDS
    assert set(event["properties"]["showAs"]["enum"]) == SHOW_AS
    assert set(event["properties"]["sensitivity"]["enum"]) == SENSITIVITY
    assert set(event["properties"]["type"]["enum"]) == EVENT_TYPES


def test_every_connector_route_is_documented() -> None:
    assert set(SPEC["paths"]) == {
        "/v1/subscriptions",
        "/v1/calendars/{mailbox}/events",
        "/graph/notifications",
        "/graph/lifecycle",
        "/healthz",
        "/v1/tenants/{tenant}/notifications",
    }
    statuses = SCHEMAS["SubscriptionRow"]["properties"]["status"]["enum"]
    assert statuses == [
        "created",
        "renewed",
        "unchanged",
        "recreated",
        "adopted",
        "deleted",
        "failed",
    ]
