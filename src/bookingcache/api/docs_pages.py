"""The interactive API documentation, ``/docs`` (Swagger UI) and ``/redoc``: FastAPI's own pages,
served with a ``Content-Security-Policy`` that allows exactly what they load. Each answer gets a
new nonce, carried by its inline script, so no other inline script runs; the scripts and styles
come from the CDN FastAPI points them at, the API description from this service."""

from __future__ import annotations

import re
import secrets

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

# Where FastAPI's pages load their scripts, styles, fonts and icon from.
CDN = "https://cdn.jsdelivr.net"
FONTS_CSS = "https://fonts.googleapis.com"
FONTS = "https://fonts.gstatic.com"
ICON = "https://fastapi.tiangolo.com"

_SCRIPT_TAG = re.compile(r"<script\b")


def swagger_policy(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}' {CDN}; "
        f"style-src 'unsafe-inline' {CDN}; img-src 'self' data: {ICON}; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def redoc_policy(nonce: str) -> str:
    # ReDoc styles itself with <style> elements it writes at run time (so 'unsafe-inline' for
    # styles, never for scripts) and parses the description in a worker made from a blob.
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}' {CDN}; "
        f"style-src 'unsafe-inline' {FONTS_CSS}; font-src {FONTS}; img-src 'self' data: {ICON}; "
        "connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _with_nonce(page: HTMLResponse, nonce: str, policy: str) -> HTMLResponse:
    html = _SCRIPT_TAG.sub(f'<script nonce="{nonce}"', bytes(page.body).decode())
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": policy,
            # A nonce is good for one answer only.
            "Cache-Control": "no-store",
        },
    )


def _openapi_url(request: Request) -> str:
    root_path: str = request.scope.get("root_path", "")
    openapi_url: str | None = request.app.openapi_url
    return root_path + (openapi_url or "/openapi.json")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request), title=f"{request.app.title} - Swagger UI"
    )
    return _with_nonce(page, nonce, swagger_policy(nonce))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    page = get_redoc_html(openapi_url=_openapi_url(request), title=f"{request.app.title} - ReDoc")
    return _with_nonce(page, nonce, redoc_policy(nonce))
