"""The secrets scan (tests/support/secrets_scan.py) finds what it is there to find: a secret
planted in a log record, an answer or a child's log file is reported, with where it was and
without the secret itself; the answers that hand a secret to its owner are not. These run the
scanner on a scan of their own, not the session's, so the planted secrets do not fail the run."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from tests.support.secrets_scan import SecretScan, _Capture

READ_TOKEN = "contoso.Zq3-planted-read-token-value-0123456789"
SIGNING_SECRET = "whsec_cGxhbnRlZC1zaWduaW5nLXNlY3JldC0zMmJ5dGVz"
# Its longest run of token characters is shorter than the index window: searched plainly.
SHORT = "k3Yq.0pL9+Zx/w"


def scan_with_secrets() -> SecretScan:
    scan = SecretScan()
    scan.secret(READ_TOKEN, "a tenant's read token")
    scan.secret(SIGNING_SECRET, "a tenant's signing secret")
    scan.secret(SHORT, "a clientState")
    scan.secret("short", "too short to be told from chance")
    return scan


def test_a_secret_in_a_log_record_is_found_and_not_repeated() -> None:
    scan = scan_with_secrets()
    logger = logging.getLogger("tests.planted")
    handler = _Capture(scan)
    logger.addHandler(handler)
    logger.propagate = False  # the planted secrets stay out of the session's own scan
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning("calling the connector with %s", SIGNING_SECRET)
        try:
            raise ValueError(f"token {READ_TOKEN} refused")
        except ValueError:
            logger.exception("it failed")
        logger.info("nothing here", extra={"client_state": SHORT})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    findings = scan.findings()
    assert {(f.kind, f.where) for f in findings} == {
        ("a tenant's signing secret", "a log record of tests.planted"),
        ("a tenant's read token", "a log record of tests.planted"),
        ("a clientState", "a log record of tests.planted"),
    }
    for finding in findings:
        report = str(finding)
        assert SIGNING_SECRET not in report
        assert READ_TOKEN not in report
        assert SHORT not in report
    assert any("<a tenant's signing secret>" in str(f) for f in findings)


def test_a_secret_inside_other_text_is_found() -> None:
    scan = scan_with_secrets()
    scan.text("a URL", f"GET /x?token%3D{READ_TOKEN}%26next")
    scan.text("glued", f"prefix{SIGNING_SECRET}suffix")
    scan.text("elsewhere", "short and nothing secret")
    assert sorted(f.where for f in scan.findings()) == ["a URL", "glued"]


def answer(method: str, url: str, status: int, body: str) -> httpx.Response:
    return httpx.Response(status, text=body, request=httpx.Request(method, url))


def test_answers_are_scanned_but_the_handovers() -> None:
    scan = scan_with_secrets()
    created = f'{{"secrets": {{"read_token": "{READ_TOKEN}"}}}}'
    scan.answer(answer("POST", "http://service/v1/tenants", 201, created))
    scan.answer(answer("GET", "http://service/v1/tenants/contoso", 200, created))
    scan.answer(
        httpx.Response(
            401,
            headers={"WWW-Authenticate": f"Bearer {SHORT}"},
            request=httpx.Request("GET", "http://service/metrics"),
        )
    )
    found = {f.where: f.kind for f in scan.findings()}
    assert found == {
        "the answer to GET http://service/v1/tenants/contoso": "a tenant's read token",
        "the answer to GET http://service/metrics": "a clientState",
    }


def test_a_secret_in_a_child_process_log_is_found(tmp_path: Path) -> None:
    scan = scan_with_secrets()
    log = tmp_path / "serve.log"
    log.write_text(f"INFO bookingcache ready\nDEBUG signing with {SIGNING_SECRET}\n")
    scan.log_file(log)
    scan.log_file(tmp_path / "never-written.log")
    [finding] = scan.findings()
    assert finding.where == "the output of a child process (serve.log)"


def test_nothing_is_reported_when_no_secret_is_there() -> None:
    scan = scan_with_secrets()
    scan.text("a log", "tenant contoso created; its read token is shown once")
    scan.answer(answer("GET", "http://service/healthz", 200, '{"status": "ok"}'))
    assert scan.findings() == []
