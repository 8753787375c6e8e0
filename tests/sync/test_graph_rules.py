"""The service asks Graph only for what Graph documents (testdata/graph-samples/graph-rules.json,
which the emulator enforces too): a token for Graph's own scope, and calendarView fields that
can be selected."""

from __future__ import annotations

from bookingcache.settings import GraphSettings
from bookingcache.sync.sources.graph import BASIC_SELECT
from tests.support.samples import sample


def test_the_default_scope_is_graphs() -> None:
    rules = sample("graph-rules.json")["rules"]
    assert GraphSettings().scope == rules["graph_token_scope"]["value"]


def test_the_calendar_view_select_holds_only_selectable_fields() -> None:
    rules = sample("graph-rules.json")["rules"]
    fields = {name.strip().lower() for name in BASIC_SELECT.split(",")}
    unselectable = {name.lower() for name in rules["calendar_view_unselectable"]["value"]}
    assert fields
    assert not fields & unselectable
