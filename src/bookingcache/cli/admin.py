"""``bookingcache admin``: the operator's shell.

On the database, with ``BOOKINGCACHE_SECRETS_KEY``:

- ``new-key`` prints a new key for ``BOOKINGCACHE_SECRETS_KEY``.
- ``reseal`` seals every stored secret again with the newest key, so that older keys can be
  dropped from ``BOOKINGCACHE_SECRETS_KEY`` afterwards (docs/api.md, "Secrets at rest").

Through a running service's admin API (``--url``, the admin token from
``BOOKINGCACHE_ADMIN_TOKEN`` or the data directory's ``admin-token`` file), each printing the
service's JSON answer, so that the changes land in the audit log like any other:

- ``read-tokens list|create|revoke``, ``signing-secret rotate``, ``client-state rotate`` and
  ``audit`` (docs/api.md, "Credentials" and "Audit log").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import quote

import httpx

from bookingcache.bootstrap import reseal_secrets, settings_from_environment
from bookingcache.errors import BookingCacheError
from bookingcache.settings import ensure_secrets_key, new_secrets_key, stored_admin_token

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 30.0


def _common() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options of the commands on the database, and of those through the admin API (each
    command takes them after its own name, as everywhere else)."""
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--data-dir", help="where the SQLite database lives")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url", default=DEFAULT_URL, help=f"the service's base URL (default {DEFAULT_URL})"
    )
    remote.add_argument(
        "--data-dir",
        help="where the service keeps its admin-token file (read unless "
        "BOOKINGCACHE_ADMIN_TOKEN is set)",
    )
    return local, remote


def configure(parser: argparse.ArgumentParser) -> None:
    local, remote = _common()
    commands = parser.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    commands.add_parser(
        "new-key",
        help="print a new key for BOOKINGCACHE_SECRETS_KEY",
        description="Print a new key for BOOKINGCACHE_SECRETS_KEY (32 random bytes, URL-safe "
        "base64). Put it first in the list, keep the old keys behind it, run `reseal`, then "
        "drop the old keys.",
    )
    reseal = commands.add_parser(
        "reseal",
        parents=[local],
        help="seal every stored secret again with the first key of BOOKINGCACHE_SECRETS_KEY",
        description="Seal every stored signing secret and clientState again with the first "
        "key of BOOKINGCACHE_SECRETS_KEY; the others must still open them.",
    )
    reseal.add_argument("--database-url", help="sqlite:///path or postgresql://...")

    tokens = commands.add_parser("read-tokens", help="a tenant's named read tokens")
    token_commands = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    listed = token_commands.add_parser(
        "list", parents=[remote], help="names, created, last used (never tokens)"
    )
    listed.add_argument("tenant")
    created = token_commands.add_parser(
        "create", parents=[remote], help="a new read token, printed once"
    )
    created.add_argument("tenant")
    created.add_argument("name", help="lower-case letters, digits and dashes")
    revoked = token_commands.add_parser(
        "revoke", parents=[remote], help="revoke a read token by its name"
    )
    revoked.add_argument("tenant")
    revoked.add_argument("name")

    signing = commands.add_parser("signing-secret", help="a tenant's signing secret")
    signing_commands = signing.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = signing_commands.add_parser(
        "rotate",
        parents=[remote],
        help="a new signing secret, printed once; the previous one verifies meanwhile",
    )
    rotate.add_argument("tenant")
    rotate.add_argument(
        "--overlap-s",
        type=int,
        default=None,
        help="how long the previous secret keeps verifying (default a day)",
    )

    state = commands.add_parser("client-state", help="a tenant's Graph clientState")
    state_commands = state.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate_state = state_commands.add_parser(
        "rotate",
        parents=[remote],
        help="a new clientState; the previous one verifies for its grace period",
    )
    rotate_state.add_argument("tenant")

    audit = commands.add_parser(
        "audit", parents=[remote], help="the audit log of admin changes, newest first"
    )
    audit.add_argument("--tenant", help="only this tenant's changes")
    audit.add_argument("--limit", type=int, default=None, help="at most this many (default 100)")
    audit.add_argument("--before", type=int, default=None, help="only entries older than this id")


def run(args: argparse.Namespace) -> int:
    if args.admin_command == "new-key":
        print(new_secrets_key())
        return 0
    if args.admin_command == "reseal":
        settings = ensure_secrets_key(
            settings_from_environment(data_dir=args.data_dir, database_url=args.database_url)
        )
        count = asyncio.run(reseal_secrets(settings))
        print(f"sealed {count} stored secrets again with the first key")
        return 0
    method, path, body, params = _request(args)
    settings = settings_from_environment(data_dir=args.data_dir)
    token = stored_admin_token(settings)
    if token is None:
        raise BookingCacheError(
            "no admin token: set BOOKINGCACHE_ADMIN_TOKEN or point --data-dir at the "
            "service's data directory"
        )
    with httpx.Client(base_url=args.url, timeout=TIMEOUT_S) as client:
        try:
            response = client.request(
                method,
                path,
                json=body,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise BookingCacheError(f"cannot reach the service at {args.url}: {exc}") from None
    if response.status_code >= 400:
        print(f"bookingcache admin: {_problem(response)}", file=sys.stderr)
        return 1
    if response.content:
        print(json.dumps(response.json(), indent=2))
    return 0


def _request(
    args: argparse.Namespace,
) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
    """The admin API call a command stands for: method, path, JSON body, query."""
    command = args.admin_command
    if command == "audit":
        query = {"tenant": args.tenant, "limit": args.limit, "before": args.before}
        return "GET", "/v1/audit", None, {k: v for k, v in query.items() if v is not None}
    tenant = "/v1/tenants/" + quote(args.tenant, safe="")
    if command == "read-tokens":
        if args.action == "list":
            return "GET", f"{tenant}/read-tokens", None, None
        if args.action == "create":
            return "POST", f"{tenant}/read-tokens", {"name": args.name}, None
        return "DELETE", f"{tenant}/read-tokens/{quote(args.name, safe='')}", None, None
    if command == "signing-secret":
        overlap = {} if args.overlap_s is None else {"overlap_s": args.overlap_s}
        return "POST", f"{tenant}/signing-secret:rotate", overlap, None
    return "POST", f"{tenant}/subscriptions:rotate-client-state", None, None


def _problem(response: httpx.Response) -> str:
    """What a refusal says: its status, title and detail (problem+json), or its status."""
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code}"
    detail = problem.get("detail") or ""
    fields = "; ".join(
        f"{error.get('field')}: {error.get('message')}"
        for error in problem.get("errors") or []
        if isinstance(error, dict)
    )
    text = f"{response.status_code} {problem.get('title', '')}: {detail}".rstrip(": ")
    return f"{text} ({fields})" if fields else text
