"""``bookingcache bench graph-client`` runs end to end with tiny numbers: the page server in its
own process over TLS, both transports measured in the same run, and the ratio of the two."""

from __future__ import annotations

import json

import pytest

from bookingcache.tools.bench import main

pytestmark = pytest.mark.slow


def test_bench_graph_client_measures_both_transports(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["graph-client", "--requests", "60", "--concurrency", "3", "--rounds", "2", "--json"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["requests"] == 120
    assert result["concurrency"] == 3
    for key in ("aiohttp_cpu_us", "httpx_cpu_us", "aiohttp_rps", "httpx_rps"):
        assert result[key] > 0, key
    # The ratio is of the two CPU figures (each printed to 0.1 µs, the ratio to 0.001).
    ours, theirs = result["aiohttp_cpu_us"], result["httpx_cpu_us"]
    assert abs(result["ratio"] - ours / theirs) <= 0.0005 + ours / theirs * (
        0.05 / ours + 0.05 / theirs
    )


def test_bench_graph_client_refuses_counts_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph-client", "--requests", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
