"""``bookingcache bench onboard`` runs end to end with tiny numbers: the emulator with Graph's
limits on, the service on SQLite and the tenant's connector, every room linked in one import,
the tenant's onboarding progress polled until each room is subscribed and fresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bookingcache.tools.bench import main
from bookingcache.tools.bench.onboard import over_limit

pytestmark = pytest.mark.slow


def test_bench_onboard_times_the_rooms_until_subscribed_and_fresh(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    picture = tmp_path / "onboard.png"
    code = main(["onboard", "--rooms", "30", "--poll-s", "0.2", "--json", "--plot", str(picture)])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["rooms"] == result["subscribed"] == result["fresh"] == 30
    assert 0 < result["all_subscribed_s"] <= result["all_fresh_s"] < 60
    # Each room: its subscription created and its calendar read, at least.
    assert result["requests"] >= 60
    assert result["subscription_writes_peak_20s"] == 30
    assert result["throttled"] == result["over_limit"] == 0
    assert 1 <= result["peak_per_mailbox"] <= 4
    assert result["targets_met"] is True
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_over_limit_sums_what_went_beyond_each_documented_limit() -> None:
    within = {"subscription_writes_peak": 500, "max_concurrency_per_mailbox": {"m": 4}}
    assert over_limit(within) == 0
    beyond = {
        "subscription_writes_peak": 510,
        "mailbox_requests_peak": 10_001,
        "max_concurrency_per_mailbox": {"m": 6, "n": 2},
    }
    assert over_limit(beyond) == 10 + 1 + 2


def test_bench_onboard_refuses_no_rooms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["onboard", "--rooms", "0"])
    assert exited.value.code == 2
    assert "must be positive" in capsys.readouterr().err
