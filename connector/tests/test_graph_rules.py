"""The connector asks Graph only for what Graph documents (testdata/graph-samples/graph-rules.json,
which the emulator enforces too): a token for Graph's own scope, calendarView fields that can be
selected."""

from __future__ import annotations

from bookingcache_connector.auth import GRAPH_SCOPE
from bookingcache_connector.events import SELECT

from .fakes import sample


def test_the_scope_is_graphs() -> None:
    rules = sample("graph-rules.json")["rules"]
    assert rules["graph_token_scope"]["value"] == GRAPH_SCOPE


def test_the_calendar_view_select_holds_only_selectable_fields() -> None:
    rules = sample("graph-rules.json")["rules"]
    fields = {name.strip().lower() for name in SELECT.split(",")}
    unselectable = {name.lower() for name in rules["calendar_view_unselectable"]["value"]}
    assert fields
    assert not fields & unselectable
