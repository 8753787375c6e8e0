"""``bookingcache bench compare`` runs end to end with tiny numbers: five contenders on one
emulator, each counted by its own app registration, with real figures for every one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bookingcache.tools.bench import main

SERVICES = ("bookingcache-alt1-graph", "bookingcache-alt2-connector", "bookingcache-alt2-push")
POLLERS = ("poll-calendarview", "poll-getschedule")


@pytest.mark.slow
@pytest.mark.side_lane
def test_bench_compare_measures_every_contender(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plot = tmp_path / "compare.png"
    code = main(
        [
            "compare",
            "--rooms", "20", "--window-s", "15", "--poll-interval-s", "5",
            "--busy-per-room-hour", "150", "--quiet-per-room-hour", "60",
            "--plot", str(plot), "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    contenders = result["contenders"]
    assert set(contenders) == {*SERVICES, *POLLERS}
    assert [name for name in contenders if "poll" in name] == list(POLLERS)
    changes = result["changes"]["busy"] + result["changes"]["quiet"]
    assert result["changes"]["busy"] > 0
    assert result["changes"]["quiet"] > 0
    assert result["control_failures"] == 0
    for name, figures in contenders.items():
        # Every contender saw changes, within the window plus the grace period.
        assert figures["shown"] + figures["never_shown"] == changes, name
        assert figures["shown"] > 0, name
        assert 0 < figures["staleness_p50_ms"] <= figures["staleness_p99_ms"], name
        assert figures["staleness_p99_ms"] <= figures["staleness_max_ms"], name
        # Graph requests counted at the emulator under the contender's own app registration.
        assert figures["graph_requests"]["busy"] > 0, name
        assert figures["graph_requests_per_hour"] > 0, name
        assert figures["graph_requests_per_room_hour"] == pytest.approx(
            figures["graph_requests_per_hour"] / 20, abs=0.05
        )
        assert figures["throttled"] == 0, name
        assert figures["cpu_s"] > 0, name
    for name in SERVICES:
        assert contenders[name]["never_shown"] == 0, contenders[name]
        # The service's own /metrics, per window: its refreshes (each change asks for one).
        own = contenders[name]["own_counts"]
        assert set(own) == {"busy", "quiet"}, name
        assert sum(own["busy"]["refreshes"].values()) > 0, name
    # The pollers read every room (or batch) once per interval, whatever the activity.
    calendar_view = contenders["poll-calendarview"]["graph_requests"]
    assert calendar_view["busy"] >= 20 * 2
    assert calendar_view["quiet"] >= 20 * 2
    # 20 rooms are one getSchedule batch of 20.
    assert 2 <= contenders["poll-getschedule"]["graph_requests"]["busy"] <= 5
    assert plot.read_bytes().startswith(b"\x89PNG")
