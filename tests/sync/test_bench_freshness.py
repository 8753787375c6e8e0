"""The freshness benchmark runs end to end with tiny numbers, for each way in and event source,
and sees every change it made."""

from __future__ import annotations

import json

import pytest

from bookingcache.tools.bench import main


@pytest.mark.slow
@pytest.mark.parametrize(
    ("alternative", "source"),
    [("1", "graph"), ("2", "connector"), ("2", "push")],
    ids=["alt1-graph", "alt2-connector", "alt2-push"],
)
def test_bench_freshness_sees_every_change(
    capsys: pytest.CaptureFixture[str], alternative: str, source: str
) -> None:
    code = main(
        [
            "freshness",
            "--rooms", "6", "--rate", "10", "--duration", "1.5", "--settle", "10",
            "--alternative", alternative, "--source", source, "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert (result["alternative"], result["source"]) == (int(alternative), source)
    assert result["mutations"] == 15
    assert result["lost"] == 0
    assert result["control_failures"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] < 10_000
    assert 0 < result["graph_requests_per_mutation"] < 5
    # Every change reached the change stream's client of its room's floor too.
    assert result["stream_lost"] == 0
    assert 0 < result["stream_p50_ms"] <= result["stream_p99_ms"] < 10_000


@pytest.mark.slow
def test_on_postgresql_a_separate_workers_changes_reach_the_stream(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    """``serve --no-worker`` and ``bookingcache worker`` as two processes: the worker's writes
    reach the stream clients of the API process, announced by PostgreSQL's notices."""
    if not database_url.startswith("postgresql"):
        pytest.skip("another process's writes are announced by PostgreSQL's notices")
    code = main(
        [
            "freshness",
            "--rooms", "6", "--rate", "10", "--duration", "1.5", "--settle", "10",
            "--split", "--database-url", database_url, "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["split"] is True
    assert (result["mutations"], result["lost"], result["stream_lost"]) == (15, 0, 0)
    assert 0 < result["stream_p50_ms"] <= result["stream_p99_ms"] < 10_000


def test_push_needs_the_relay(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["freshness", "--source", "push"])
    assert exit_info.value.code == 2
    assert "--alternative 2" in capsys.readouterr().err
