"""The availability benchmark runs end to end with tiny numbers and prints its JSON."""

from __future__ import annotations

import json

import pytest

from bookingcache.tools.bench import main

pytestmark = pytest.mark.pinned_dates


@pytest.mark.slow
def test_bench_availability_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "availability",
            "--rooms",
            "5",
            "--bulk-requests",
            "3",
            "--single-seconds",
            "0.3",
            "--concurrency",
            "2",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rooms"] == 5
    assert result["bulk_rooms"] == 5
    assert result["bulk_requests"] == 3
    for key in ("bulk_p50_ms", "bulk_p99_ms", "single_rps", "single_baseline_rps", "rss_mb"):
        assert isinstance(result[key], float), key
        assert result[key] > 0, key
    assert result["bulk_p50_ms"] <= result["bulk_p99_ms"]
    assert result["bulk_response_bytes"] > 5 * 500  # five rooms' answers came back
    # The bare handler answered bodies of the service's size, and the ratio is of the two rates.
    assert result["single_response_bytes"] > 100
    # Both rates are printed to 0.1 and the ratio to 0.001, each rounded from the exact figure.
    single, bare = result["single_rps"], result["single_baseline_rps"]
    rounding = 0.0005 + single / bare * (0.05 / single + 0.05 / bare)
    assert abs(result["single_ratio"] - single / bare) <= rounding


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonsense"]) == 2
    assert "availability" in capsys.readouterr().err
