"""The stream benchmark runs end to end with tiny numbers and delivers every event."""

from __future__ import annotations

import json

import pytest

from bookingcache.tools.bench import main


@pytest.mark.slow
def test_bench_stream_delivers_every_change_to_every_client_of_its_floor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "stream",
            "--rooms", "20", "--rooms-per-floor", "10", "--clients", "6",
            "--rate", "10", "--duration", "1", "--settle", "10", "--baseline", "1", "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["changes"] == 10
    # 6 clients on 2 floors: each change reaches the 3 clients of its room's floor.
    assert (result["deliveries"], result["undelivered"], result["starved_clients"]) == (30, 0, 0)
    assert result["resets"] == 0
    assert 0 < result["delivery_p50_ms"] <= result["delivery_p99_ms"] < 10_000
    assert result["rss_before_clients_mb"] > 0
    # The changes made with no client first give the stream's share of the server's CPU.
    assert result["server_cpu_us_per_change_without_clients"] > 0
    assert isinstance(result["stream_cpu_us_per_event"], float)
