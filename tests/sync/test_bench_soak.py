"""``bookingcache bench soak`` runs end to end with tiny numbers: two API processes and two
workers on a PostgreSQL database of their own, a steady amount of cached data, and a sample
of every process's memory and the queue at each interval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bookingcache.tools.bench import main
from tests.support.databases import POSTGRES_ENV

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROCESSES = {"api0", "api1", "worker0", "worker1"}


def test_bench_soak_watches_the_cluster_under_steady_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plot = tmp_path / "soak.png"
    code = main(
        [
            "soak", "--database-url", os.environ[POSTGRES_ENV],
            "--rooms", "12", "--rate", "8", "--warmup", "4", "--duration", "12",
            "--interval", "2", "--per-room", "2", "--plot", str(plot), "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert (result["api_processes"], result["workers"]) == (2, 2)
    assert result["mutations"] == 8 * 16 - result["skipped"]
    assert result["control_failures"] == 0
    assert result["lost"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] < 10_000
    # Each room holds about two bookings: the data stays the same size, so growth is a leak.
    assert 12 <= result["bookings_held"] <= 12 * 3
    # Both API processes' streams saw the changes, whichever process's worker wrote them.
    assert result["stream_events"] > 0
    samples = result["samples"]
    assert len(samples) >= 7
    assert all(set(sample["rss_mb"]) == PROCESSES for sample in samples)
    assert all(30 < mb < 1000 for sample in samples for mb in sample["rss_mb"].values())
    assert set(result["rss_slope_mb_per_min"]) == PROCESSES
    assert all(sample["queue_depth"] >= 0 for sample in samples)
    # Every interval of the run has its freshness, from the changes sent in it.
    intervals = result["intervals"]
    assert len(intervals) == 8
    assert sum(row["changes"] for row in intervals) == result["mutations"]
    assert set(result["targets"]) == {"memory", "queue", "freshness"}
    assert plot.read_bytes().startswith(b"\x89PNG")
