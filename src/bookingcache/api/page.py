"""The live availability page: ``GET /`` and its files under ``/page/``.

The page is plain HTML, CSS and JavaScript modules shipped in this package (``api/page_files``,
package data), with no build step and nothing from another origin. It signs in with a tenant's
read token, which it keeps in the tab's ``sessionStorage`` and sends only in the
``Authorization`` header; the live stream is opened with a short-lived ticket.

Its answers carry their own ``Content-Security-Policy`` (``security_headers`` keeps a policy an
answer set itself): scripts, styles, images and connections from this origin only, no inline
script or style, no framing, no form posting anywhere. The files are read once, at import, and
only those are served: a name that is not one of them is a 404 like any other unknown URL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bookingcache.errors import NotFound

router = APIRouter(include_in_schema=False)

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class PageFile:
    body: bytes
    media_type: str
    etag: str


def _load() -> dict[str, PageFile]:
    files: dict[str, PageFile] = {}
    folder = resources.files("bookingcache.api") / "page_files"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:32]
            files[entry.name] = PageFile(body, _TYPES[suffix], f'"{digest}"')
    return files


FILES = _load()


def _answer(request: Request, name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"no page file {name!r}")
    headers = {
        "Content-Security-Policy": PAGE_POLICY,
        # Revalidated on every load, so a new version of the service is picked up at once.
        "Cache-Control": "no-cache",
        "ETag": found.etag,
    }
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.get("/")
async def page(request: Request) -> Response:
    return _answer(request, "index.html")


@router.get("/page/{name}")
async def page_file(request: Request, name: str) -> Response:
    return _answer(request, name)
