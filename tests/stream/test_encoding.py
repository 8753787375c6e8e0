"""A room state's encoding for the stream: one line for every SSE reader."""

from __future__ import annotations

import json

from bookingcache.read.roomstate import encode


def test_a_state_is_one_ascii_line_whatever_its_names_hold() -> None:
    state = {
        "room": "r-1",
        "name": "Fjord\u2028Hall\x85 \u00e9\u6c34",
        "current": {"title": "a\rb"},
    }
    data = encode(state)
    assert data.isascii()
    # Python's splitlines breaks on U+2028 and U+0085 too, as some SSE readers do.
    assert len(data.decode().splitlines()) == 1
    assert json.loads(data) == state
