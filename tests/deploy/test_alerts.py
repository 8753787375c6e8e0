"""The alerting rules (deploy/prometheus/alerts.yml) pass ``promtool test rules`` on their unit
tests (alerts.test.yml), and Prometheus's configuration for the compose stack loads them.

promtool comes with Debian's ``prometheus`` package (scripts/system-packages). Without it the
test fails, naming the script: rules nobody has evaluated are worse than none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run scripts/system-packages (Debian's prometheus)")
    return found


def _run(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_the_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    output = _run(promtool, "test", "rules", "alerts.test.yml")
    assert "SUCCESS" in output


def test_the_prometheus_configuration_loads_the_rules(promtool: str) -> None:
    output = _run(promtool, "check", "config", "prometheus.yml")
    assert "1 rule files found" in output
    rules = _run(promtool, "check", "rules", "alerts.yml")
    assert "SUCCESS: 17 rules found" in rules


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == fired
