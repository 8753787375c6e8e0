"""The bookingcache-connector command: the connector as a script, for customers who run no
service, and its HTTP server.

    bookingcache-connector subscribe --mailboxes rooms.txt --notification-url URL --client-state S
    bookingcache-connector renew | list | delete [--mailboxes rooms.txt] | check [...]
    bookingcache-connector register --notification-url URL --client-state S [--send]
    bookingcache-connector serve [--host 0.0.0.0] [--port 8080]
    bookingcache-connector healthcheck [--port 8080]

Settings come from the same CONNECTOR_* environment variables as the other entry points;
serve's address also from CONNECTOR_HOST and CONNECTOR_PORT (a container image sets them),
which its options override. Add --json, before or after the command, for JSON instead of a
table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from .app import create_app
from .bootstrap import Connector, build_connector
from .check import run_check
from .config import load_settings
from .errors import ConfigError, ConnectorError
from .subscriptions import Desired, registration

Factory = Callable[[Mapping[str, str]], Connector]


def read_mailboxes(path: str) -> list[str]:
    """One address per line; blank lines and ``#`` comments ignored; ``-`` reads stdin."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    found = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip().strip(",")
        if entry:
            found.append(entry)
    return found


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="bookingcache-connector",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # Every command takes --json too, after its name; given there it wins over the default.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON instead of a table",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[output])

    mailboxes = "file with one room address per line ('#' starts a comment; '-' reads stdin)"
    notification = "the URL Graph posts change notifications to"
    lifecycle = "the URL Graph posts lifecycle notifications to (default: none)"
    sub = command("subscribe", "converge subscriptions to exactly these rooms")
    sub.add_argument("--mailboxes", required=True, help=mailboxes)
    sub.add_argument("--notification-url", required=True, help=notification)
    sub.add_argument("--lifecycle-url", default=None, help=lifecycle)
    sub.add_argument(
        "--client-state", required=True, help="the secret Graph sends with every notification"
    )
    renew = command("renew", "renew subscriptions with less than 48 h left")
    renew.add_argument("--all", action="store_true", help="renew every subscription now")
    command("list", "list this app's subscriptions")
    delete = command("delete", "delete this app's subscriptions")
    delete.add_argument("--mailboxes", default=None, help="only these rooms (default: all)")
    check = command("check", "diagnose credentials, permissions and URLs")
    check.add_argument(
        "--mailboxes", required=True, help=mailboxes + "; each must be readable by the app"
    )
    check.add_argument(
        "--notification-url",
        default=None,
        help=notification + ": check answers its validation handshake as Graph would, then "
        "creates and deletes one test subscription (default: not checked)",
    )
    check.add_argument(
        "--lifecycle-url",
        default=None,
        help="the lifecycle notification URL: its validation handshake is checked too",
    )
    register = command(
        "register",
        "give bookingcache the subscriptions made with subscribe (Alternative 1): print the "
        "registration, or send it signed with --send",
    )
    register.add_argument(
        "--notification-url",
        required=True,
        help="the notification URL the subscriptions were made with; only those are registered",
    )
    register.add_argument(
        "--client-state", required=True, help="the client state they were made with"
    )
    register.add_argument(
        "--send",
        action="store_true",
        help="send it to CONNECTOR_SERVICE_URL for CONNECTOR_SERVICE_TENANT, signed with "
        "CONNECTOR_WEBHOOK_SECRET (default: print it)",
    )
    serve = command(
        "serve",
        "serve the HTTP API (relay, basic events, subscriptions) with bounded requests "
        "and read timeouts (needs the [server] extra)",
    )
    serve.add_argument(
        "--host", default=None, help="address to listen on (default CONNECTOR_HOST or 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default CONNECTOR_PORT or 8080; 0: any free)"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        help="uvicorn's log level",
    )
    serve.add_argument(
        "--no-access-log", action="store_true", help="no line per request on standard output"
    )
    health = command(
        "healthcheck",
        "exit 0 if the connector served on this host answers GET /healthz (a container's "
        "health check)",
    )
    health.add_argument("--port", type=int, default=None, help="default CONNECTOR_PORT or 8080")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    return top


def _address(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, int]:
    """``serve``'s address: the options, else ``CONNECTOR_HOST`` and ``CONNECTOR_PORT``."""
    host = getattr(args, "host", None) or env.get("CONNECTOR_HOST") or "127.0.0.1"
    if args.port is not None:
        return host, args.port
    try:
        port = int(env.get("CONNECTOR_PORT") or 8080)
    except ValueError:
        raise ConnectorError("CONNECTOR_PORT is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConnectorError("CONNECTOR_PORT is not a port number")
    return host, port


# A connector bound to every address is asked on loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (compared, not bound)


def _healthcheck(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        host, port = _address(args, env)
    except ConnectorError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    host = _WILDCARDS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/healthz"
    try:
        response = httpx.get(url, timeout=args.timeout, trust_env=False)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"healthcheck: {url}: {type(exc).__name__}: {exc}\n")
        return 1
    if response.status_code != 200:
        sys.stderr.write(f"healthcheck: {url}: {response.status_code}{_why(response)}\n")
        return 1
    return 0


def _why(response: httpx.Response) -> str:
    """The loops ``/healthz`` names as unhealthy, e.g. ``: relay failing (3 failures in a row)``."""
    try:
        unhealthy = response.json().get("unhealthy")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(unhealthy, dict) or not unhealthy:
        return ""
    return ": " + "; ".join(f"{name} {why}" for name, why in sorted(unhealthy.items()))


def _serve(args: argparse.Namespace, env: Mapping[str, str], factory: Factory | None) -> int:
    try:
        from .server import serve
    except ImportError:
        sys.stderr.write(
            "serve needs uvicorn: install the connector's wheel with its [server] extra "
            "(README, section 0), or pip install uvicorn\n"
        )
        return 2
    try:
        settings = load_settings(env)
        host, port = _address(args, env)
    except ConnectorError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2

    def build() -> Connector:
        return factory(env) if factory is not None else build_connector(settings)

    return serve(
        create_app(build=build),
        settings,
        host=host,
        port=port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )


async def _run(args: argparse.Namespace, connector: Connector) -> tuple[list[dict[str, Any]], bool]:
    manager = connector.subscriptions
    if args.command == "subscribe":
        desired = Desired.from_json(
            {
                "mailboxes": read_mailboxes(args.mailboxes),
                "notificationUrl": args.notification_url,
                "lifecycleNotificationUrl": args.lifecycle_url,
                "clientState": args.client_state,
            }
        )
        rows = await manager.converge(desired)
        return rows, all(r["status"] != "failed" for r in rows)
    if args.command == "renew":
        rows = await manager.renew(force=args.all)
        return rows, all(r["status"] != "failed" for r in rows)
    if args.command == "list":
        subs = await manager.list_all()
        keys = (
            "id",
            "resource",
            "expirationDateTime",
            "notificationUrl",
            "lifecycleNotificationUrl",
        )
        return [{k: s.get(k) for k in keys} for s in subs], True
    if args.command == "register":
        return await _register(args, connector)
    if args.command == "delete":
        only = set(read_mailboxes(args.mailboxes)) if args.mailboxes else None
        rows = await manager.delete(only)
        return rows, all(r["status"] != "failed" for r in rows)
    urls = [
        (label, url)
        for label, url in (
            ("notificationUrl", args.notification_url),
            ("lifecycleNotificationUrl", args.lifecycle_url),
        )
        if url
    ]
    settings = connector.settings
    async with httpx.AsyncClient(verify=settings.ssl_context(), trust_env=False) as http:
        findings = await run_check(
            tokens=connector.tokens,
            graph=connector.graph,
            clock=connector.clock,
            http=http,
            mailboxes=read_mailboxes(args.mailboxes),
            notification_urls=urls,
        )
    return [f.to_json() for f in findings], all(f.ok for f in findings)


async def _register(
    args: argparse.Namespace, connector: Connector
) -> tuple[list[dict[str, Any]], bool]:
    subscriptions = await connector.subscriptions.list_all()
    payload = registration(
        subscriptions, notification_url=args.notification_url, client_state=args.client_state
    )
    if not payload["subscriptions"]:
        raise ConnectorError(f"no subscription of this app notifies {args.notification_url}")
    if not args.send:
        # What the service's administrator posts with the admin token (README, section 6).
        return [payload], True
    if connector.service is None:
        raise ConfigError(
            "--send needs CONNECTOR_SERVICE_URL, CONNECTOR_SERVICE_TENANT and "
            "CONNECTOR_WEBHOOK_SECRET"
        )
    answer = await connector.service.register(payload)
    rows = [
        {
            "mailbox": row.get("mailbox"),
            "subscriptionId": row.get("subscription_id"),
            "expirationDateTime": row.get("expires_at"),
            "status": "registered",
        }
        for row in answer.get("subscriptions", [])
    ]
    return rows, True


def _print(rows: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        out.write("(nothing)\n")
        return
    columns = list(rows[0].keys())
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    out.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(_cell(r.get(c)).ljust(widths[c]) for c in columns).rstrip() + "\n")


def _cell(value: Any) -> str:
    """A table cell: nothing for a missing value; ``False`` and ``0`` as themselves."""
    return "" if value is None else str(value)


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    factory: Factory | None = None,
    out: TextIO | None = None,
) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args, env if env is not None else os.environ, factory)
    if args.command == "healthcheck":
        return _healthcheck(args, env if env is not None else os.environ)
    out = out or sys.stdout
    try:
        connector = (factory or (lambda e: build_connector(load_settings(e))))(
            env if env is not None else os.environ
        )
    except ConnectorError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2

    async def go() -> tuple[list[dict[str, Any]], bool]:
        try:
            return await _run(args, connector)
        finally:
            await connector.aclose()

    try:
        rows, ok = asyncio.run(go())
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    except (ConnectorError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if args.command == "register" and not args.send:
        # The registration itself, as the service takes it: always JSON.
        out.write(json.dumps(rows[0], indent=2) + "\n")
        return 0
    _print(rows, args.json, out)
    return 0 if ok else 1
