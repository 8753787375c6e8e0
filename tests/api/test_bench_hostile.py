"""``bookingcache serve`` against hostile clients, as ``bookingcache bench hostile`` measures it:
a real service process, oversized request targets and stalled request heads over real
sockets."""

from __future__ import annotations

import json

import pytest

from bookingcache.tools.bench import main

MIB = 1024 * 1024


@pytest.mark.slow
def test_serve_refuses_huge_targets_and_closes_stalled_heads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "hostile",
            "--json",
            "--seconds",
            "0.5",
            "--stalled",
            "50",
            "--header-timeout-s",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)

    targets = result["oversized_targets"]
    assert targets["target_bytes"] == 64 * MIB
    assert targets["refused_all"], targets
    # Each answer came long before the client was done sending: the server read no further.
    assert targets["max_bytes_sent_before_answer"] < 16 * MIB
    # /healthz kept answering on its own connection meanwhile.
    assert targets["health_during"]["answers"] >= 1
    # Nothing of the targets was kept: no balloon in the server's peak memory.
    assert targets["peak_rss_after_mb"] - targets["peak_rss_before_mb"] < 32

    stalled = result["stalled_heads"]
    assert stalled["connections"] == stalled["closed"] == 50
    assert stalled["statuses"] == [408]
    assert stalled["health_during"]["answers"] == 20
