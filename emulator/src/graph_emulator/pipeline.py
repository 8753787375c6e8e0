"""What every mailbox-scoped Graph request goes through: token, mailbox, grant and scope,
throttling, fault hooks; plus request-body and OData helpers shared by the routes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request

from graph_emulator.auth import AppPrincipal, Need, authenticate, require_mailbox
from graph_emulator.directory import Mailbox
from graph_emulator.errors import bad_request
from graph_emulator.timezones import UTC, find_zone
from graph_emulator.views import View, parse_select

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState


@dataclass(frozen=True)
class Access:
    principal: AppPrincipal
    mailbox: Mailbox


@asynccontextmanager
async def mailbox_access(
    request: Request, state: EmulatorState, user: str, *, need: Need
) -> AsyncIterator[Access]:
    principal = await authenticate(request, state)
    mailbox = state.directory.resolve(user)
    require_mailbox(principal, mailbox, need=need)
    async with state.throttle.admit(principal.app_id, mailbox.id):
        for hook in list(state.mailbox_request_hooks):
            await hook(principal.app_id, mailbox.id)
        yield Access(principal, mailbox)


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and "
            "payload is of valid JSON format."
        )
    return body


@dataclass(frozen=True)
class Prefer:
    zone_name: str | None
    max_page_size: int | None

    def applied(self) -> dict[str, str]:
        parts = []
        if self.zone_name is not None:
            parts.append(f'outlook.timezone="{self.zone_name}"')
        if self.max_page_size is not None:
            parts.append(f"odata.maxpagesize={self.max_page_size}")
        return {"Preference-Applied": ", ".join(parts)} if parts else {}


# A preference's value is quoted or runs to the next "," or ";": Graph takes
# ``outlook.timezone=Pacific Standard Time`` unquoted, spaces and all.
_PREF = re.compile(r'\s*([A-Za-z.\-]+)\s*=\s*("([^"]*)"|[^,;]+)')


def parse_prefer(request: Request) -> Prefer:
    zone_name: str | None = None
    page: int | None = None
    for header in request.headers.getlist("prefer"):
        for match in _PREF.finditer(header):
            name = match.group(1).lower()
            value = match.group(3) if match.group(3) is not None else match.group(2).strip()
            if name == "outlook.timezone" and find_zone(value) is not None:
                zone_name = value
            elif name == "odata.maxpagesize" and value.isdigit() and int(value) > 0:
                page = int(value)
    return Prefer(zone_name, page)


def view_for(request: Request, access: Access, prefer: Prefer, *, select: bool = True) -> View:
    zone = find_zone(prefer.zone_name) if prefer.zone_name else None
    return View(
        zone=zone or UTC,
        zone_name=prefer.zone_name or "UTC",
        basic=not access.principal.can_read_full,
        select=parse_select(request.query_params.get("$select")) if select else None,
    )


KNOWN_OPTIONS = {"$select", "$top", "$skip", "$filter", "$orderby", "$expand", "$count", "$search"}


def check_options(request: Request, *, supported: set[str]) -> None:
    """400 for unknown ``$`` options and for known ones this endpoint does not take."""
    for key in request.query_params:
        if not key.startswith("$"):
            continue
        if key not in KNOWN_OPTIONS and key not in supported:
            raise bad_request(f"Query option '{key}' is not allowed.")
        if key not in supported:
            raise bad_request(f"The query option '{key}' is not supported by this emulator.")


def int_option(request: Request, name: str, *, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise bad_request(
            f"Invalid value '{raw}' for query option '{name}'; it must be an integer from "
            f"{low} to {high}.",
            code="ErrorInvalidUrlQuery" if name == "$top" else "BadRequest",
        )
    return int(raw)


def graph_root(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/v1.0"


def context_user(user: str) -> str:
    return quote(user, safe="")
