"""One demo and one signed-in browser tab for the browser tests of a module: starting the
processes and the browser is most of these tests' time. Module-scoped, not wider: Playwright's
synchronous driver holds the main thread's event loop while it runs, so it must be closed before
another module's asynchronous tests run."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator

import httpx
import pytest
from playwright import sync_api as playwright_api

from bookingcache.tools.demo import Demo
from tests.support.browser import chromium_path
from tests.support.live_page import RECORD_VIOLATIONS, World


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work_dir = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        # The demo's processes take their settings from the demo, not from the test run.
        for name in [n for n in os.environ if n.startswith("BOOKINGCACHE_")]:
            patch.delenv(name)
        demo = Demo(work_dir=work_dir, alternative=1, port=0, rate_per_s=2, say=lambda _: None)
        try:
            info = demo.setup()
            verify = ssl.create_default_context(cafile=str(info["emulator_cert"]))
            with (
                httpx.Client(
                    base_url=info["service_url"],
                    headers={"Authorization": f"Bearer {info['read_token']}"},
                    timeout=30,
                ) as api,
                httpx.Client(
                    base_url=info["service_url"],
                    headers={"Authorization": f"Bearer {info['admin_token']}"},
                    timeout=30,
                ) as admin,
                httpx.Client(
                    base_url=str(info["emulator_control_url"]), verify=verify, timeout=30
                ) as control,
                playwright_api.sync_playwright() as driver,
            ):
                # The simulator made the floors move; the tests make their own changes.
                assert control.post("/simulator/stop").status_code == 200
                browser = driver.chromium.launch(
                    executable_path=chromium_path(), args=["--no-sandbox"]
                )
                try:
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    context.add_init_script(RECORD_VIOLATIONS)
                    page = context.new_page()
                    world = World(demo, info, api, admin, control, page)
                    page.on("request", lambda request: world.urls.append(request.url))
                    page.goto(world.url + "/")
                    page.fill("#sign-in-token", str(info["read_token"]))
                    page.click("#sign-in-form button[type=submit]")
                    page.wait_for_selector("#floor:not([hidden])", timeout=10_000)
                    yield world
                finally:
                    browser.close()
        finally:
            demo.stop()
