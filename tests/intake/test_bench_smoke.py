"""The intake benchmark runs end to end with tiny numbers, on SQLite and on PostgreSQL, and
finds every notification its service answered 202 in the inbox."""

from __future__ import annotations

import json
import os

import pytest

from bookingcache.tools.bench import main
from tests.support.databases import POSTGRES_ENV


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    code = main(
        [
            "intake",
            "--seconds",
            "0.5",
            "--warmup",
            "0.2",
            "--connections",
            "2",
            "--rooms",
            "3",
            "--json",
            *extra,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.slow
def test_bench_intake_on_sqlite(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "--no-worker", "--slice-seconds", "0.25")
    assert result["database"] == "sqlite"
    # The servers took turns: two slices each, the service killed at the end of its second.
    assert result["slices"] == 2
    assert result["worker"] is False
    assert result["durable"] is True
    assert result["lost_notifications"] == 0
    accepted = result["accepted_notifications"]
    assert isinstance(accepted, int)
    assert accepted > 0
    assert result["ratio_floor"] == 0.36
    for key in (
        "baseline_rps",
        "service_rps",
        "ratio",
        "p99_ms",
        "service_cpu_us_per_request",
        "baseline_cpu_us_per_request",
    ):
        value = result[key]
        assert isinstance(value, float), key
        assert value > 0, key


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_intake_on_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "--database-url", os.environ[POSTGRES_ENV])
    assert result["database"] == "postgresql"
    assert result["worker"] is True
    assert result["durable"] is True
    assert result["lost_notifications"] == 0


def test_bench_intake_refuses_a_database_url_that_is_not_postgresql(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["intake", "--database-url", "sqlite:///x.db", "--seconds", "0.1"]) == 1
    assert "PostgreSQL" in capsys.readouterr().err
