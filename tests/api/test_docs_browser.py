"""The documentation pages work under their Content-Security-Policy in a real browser (Debian's
chromium, driven by Playwright, against the service on a loopback port): the page's own inline
script runs, nothing the page does is reported as a policy violation, and a script injected
without the answer's nonce is refused. The network has no CDN, so the CDN's requests are
aborted: the test is about the policy, not about Swagger UI's rendering."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright_api
from pydantic import SecretStr

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from tests.support.auth import ADMIN_TOKEN
from tests.support.browser import chromium_path
from tests.support.databases import SECRETS_KEY
from tests.support.servers import serve_in_thread

pytestmark = pytest.mark.slow

# Collects every violation the page reports, from before its first script runs.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI,
                            sample: e.sample});
});
"""
INJECT = """() => {
  const script = document.createElement('script');
  script.textContent = 'window.__injected = true;';
  document.body.appendChild(script);
  return new Promise((resolve) => setTimeout(resolve, 200));
}"""


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[str]:
    settings = Settings(
        environment="development",
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=SecretStr(ADMIN_TOKEN),
        secrets_key=SecretStr(SECRETS_KEY),
        database_wait_s=0,
    )
    with serve_in_thread(service_app(settings, clock=FixedClock(dt.datetime.now(dt.UTC)))) as url:
        yield url


@pytest.mark.parametrize(
    ("page_path", "own_script_ran"),
    [
        # The inline script runs and calls the bundle the CDN would have delivered.
        ("/docs", "SwaggerUIBundle is not defined"),
        ("/redoc", None),
    ],
)
def test_documentation_pages_run_under_their_policy(
    served: str, page_path: str, own_script_ran: str | None
) -> None:
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            console: list[str] = []
            errors: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("https://**/*", lambda route: route.abort())
            page.add_init_script(RECORD_VIOLATIONS)
            response = page.goto(served + page_path, wait_until="load")
            assert response is not None
            assert response.status == 200
            page.wait_for_timeout(300)
            violations: list[dict[str, Any]] = page.evaluate("window.__violations")
            assert violations == [], violations
            assert not [text for text in console if "Content Security Policy" in text], console
            if own_script_ran is not None:
                assert any(own_script_ran in error for error in errors), errors
            # The policy is in force: a script without this answer's nonce does not run.
            page.evaluate(INJECT)
            assert page.evaluate("window.__injected === undefined")
            refused = page.evaluate("window.__violations")
            assert [v["directive"] for v in refused] == ["script-src-elem"], refused
        finally:
            browser.close()
