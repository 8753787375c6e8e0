"""The browser the browser tests drive: Debian's chromium (scripts/system-packages), through
Playwright's Python package (a test extra). A missing chromium fails the test that needs it with
the command that installs it: browser tests are never skipped for want of it."""

from __future__ import annotations

import shutil

import pytest

INSTALL = "scripts/system-packages chromium  (as root: apt-get install -y chromium)"


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(f"chromium is not installed; install it with: {INSTALL}", pytrace=False)
    return found
