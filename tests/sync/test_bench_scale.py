"""``bookingcache bench scale`` runs end to end with tiny numbers: one API process and 1, 2,
then 4 workers on a PostgreSQL database of its own, the emulator answering Graph requests
after 50 ms, each window's successful refreshes counted from the workers' ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from bookingcache.store.sql.pgserver import autovacuum_on, autovacuum_pace
from bookingcache.tools.bench import main
from tests.support.databases import POSTGRES_ENV

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

GROUPS = {"api", "workers", "emulator", "bench", "postgres", "others", "machine"}


def test_bench_scale_counts_refreshes_with_one_two_and_four_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "scale", "--database-url", os.environ[POSTGRES_ENV],
            "--rooms", "30", "--rate", "10", "--warmup", "2", "--duration", "3", "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["cores"] == os.cpu_count()
    assert result["latency_ms"] == 50.0
    assert set(result["refreshes_per_s"]) == {"1", "2", "4"}
    for count, phase in result["phases"].items():
        assert phase["workers"] == int(count)
        # Real refreshes in every window: the figure is the successful ones a second.
        done = phase["outcomes"]
        succeeded = done.get("changed", 0) + done.get("unchanged", 0)
        assert succeeded > 0, phase
        # Both figures are rounded (the rate to 0.1, the window to 0.01 s): the rate must lie
        # within what those roundings allow around the successful refreshes over the window.
        window = phase["window_s"]
        low = succeeded / (window + 0.005) - 0.05
        high = succeeded / (window - 0.005) + 0.05
        assert low - 1e-9 <= phase["refreshes_per_s"] <= high + 1e-9, phase
        # Every successful refresh read Graph at least once, each request waiting 50 ms,
        # within Graph's limit of 4 requests in flight per mailbox. The emulator's counters
        # start with the window, so the refreshes in flight then (at most 64 a worker) may
        # have sent their request before.
        assert phase["graph_requests"] > 0
        assert succeeded <= phase["graph_requests"] + 64 * phase["workers"]
        assert 1 <= phase["max_mailbox_concurrency"] <= 4
        assert phase["graph_throttled"] == 0
        assert phase["changes_sent"] > 0
        assert phase["control_failures"] == 0
        assert set(phase["cpu_s"]) == GROUPS
        assert phase["cpu_s"]["workers"] > 0
        assert phase["cpu_s"]["machine"] >= phase["cpu_s"]["workers"]
        assert 0 < phase["machine_busy"] <= 1.05
    rates = result["refreshes_per_s"]
    assert result["speedup_2"] == pytest.approx(rates["2"] / rates["1"], abs=0.01)
    assert result["target_met"] == (rates["2"] / rates["1"] >= 1.8)
    assert result["graph_throttled"] == 0
    assert result["flattens_at_workers"] in (None, 2, 4)
    assert result["why"]
    # Where the server runs no autovacuum, the benchmark stands in for it over the phases.
    if asyncio.run(autovacuum_on(os.environ[POSTGRES_ENV])):
        assert result["vacuum_stand_in"] is None
    else:
        stand_in = result["vacuum_stand_in"]
        naptime_s = asyncio.run(autovacuum_pace(os.environ[POSTGRES_ENV])).naptime_s
        assert stand_in["every_s"] == naptime_s
        assert (stand_in["max_s"] is None) == (stand_in["runs"] == 0)


def test_bench_scale_refuses_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scale", "--database-url", os.environ[POSTGRES_ENV], "--rooms", "0"])
    assert code == 2
    assert "must be positive" in capsys.readouterr().err
