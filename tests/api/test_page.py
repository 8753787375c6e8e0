"""The live availability page is served at ``/`` with its files under ``/page/``: only the
files shipped in the package, each with its type and the page's own policy; no inline script or
style, nothing from another origin; and every file is package data, so a wheel carries it."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

from bookingcache.api import page

ROOT = Path(__file__).resolve().parents[2]
FILES_DIR = Path(page.__file__).parent / "page_files"
PAGE_DIRECTIVES = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
}


def directives(policy: str) -> dict[str, str]:
    pairs = (part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    return {name: value for name, value in pairs}


def referenced(text: str) -> set[str]:
    """The page files an HTML or JS file loads: src/href under /page/, and module imports."""
    found = set(re.findall(r'(?:src|href)="/page/([^"]+)"', text))
    found |= set(re.findall(r'from "\./([^"]+)"', text))
    return found


async def test_the_page_is_served_at_the_root_with_its_own_policy(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert directives(answer.headers["content-security-policy"]) == PAGE_DIRECTIVES
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-cache"
    html = answer.text
    # Scripts only as files of this origin, never inline; styles only from the style sheet.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts == [(' type="module" src="/page/app.js"', "")]
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert {"app.js", "page.css", "icon.svg"} <= referenced(html)


async def test_every_file_the_page_loads_is_served_with_its_type(
    client: httpx.AsyncClient,
) -> None:
    types = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    wanted = referenced((FILES_DIR / "index.html").read_text())
    seen: set[str] = set()
    while wanted - seen:
        name = sorted(wanted - seen)[0]
        seen.add(name)
        answer = await client.get(f"/page/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == types[Path(name).suffix], name
        assert directives(answer.headers["content-security-policy"]) == PAGE_DIRECTIVES
        wanted |= referenced(answer.text)
        # Nothing from another origin (the SVG namespace is a name, not a load).
        urls = set(re.findall(r"https?://[^\s\"')]+", answer.text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    # The module graph reaches every script shipped, and every one of them is served.
    assert {p.name for p in FILES_DIR.glob("*.js")} <= seen


async def test_a_file_is_revalidated_by_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/page/app.js")
    etag = first.headers["etag"]
    again = await client.get("/page/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = await client.get("/page/app.js", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert other.content == first.content


@pytest.mark.parametrize(
    "path",
    ["/page/nope.js", "/page/..%2Fpage.py", "/page/%2E%2E/settings.py", "/page/", "/page/index"],
)
async def test_only_the_shipped_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:bookingcache:problem:not-found"
    # An error answer keeps the service's JSON policy, not the page's.
    assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_every_page_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["bookingcache"]
    package = ROOT / "src" / "bookingcache"
    shipped = sorted(p.relative_to(package).as_posix() for p in FILES_DIR.iterdir())
    assert shipped, "the page has files"
    missing = [name for name in shipped if not any(fnmatch(name, p) for p in patterns)]
    assert missing == []
    assert set(page.FILES) == {Path(name).name for name in shipped}
