"""``bookingcache-connector check``: tell the administrator exactly what is wrong.

In order: can MSAL get a token (credentials, tenant, authority); can the app read each room's
calendar (a 403 on every mailbox means Calendars.Read is missing; on some only, those mailboxes
are outside the RBAC management scope); do the notification URLs answer Graph's validation
handshake the way Graph requires (200, text/plain, the decoded token)?
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from .auth import TokenProvider
from .clock import Clock, to_graph_utc
from .errors import AuthError, ConnectorError, GraphError
from .graph import GraphClient
from .redact import redact_urls


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}


def token_roles(token: str) -> list[str] | None:
    """The ``roles`` claim of an access token, read without verifying it (diagnostics only)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [str(r) for r in roles] if isinstance(roles, list) else None


async def check_credentials(tokens: TokenProvider) -> tuple[Finding, str | None]:
    try:
        token = await tokens.token()
    except AuthError as exc:
        hint = {
            "invalid_client": "the client secret or certificate is wrong or expired",
            "unauthorized_client": "the application id is not known in this tenant",
            "invalid_request": "the tenant id or the request is wrong",
            "invalid_authority": "the authority URL or tenant id is wrong",
            "unreachable": "the token endpoint cannot be reached (network, proxy, CA bundle)",
        }.get(exc.error, "see the error from the identity platform")
        return Finding("credentials", False, f"bad credentials: {hint} ({exc})"), None
    return Finding("credentials", True, "MSAL obtained an app-only Graph token"), token


async def check_mailboxes(
    graph: GraphClient, clock: Clock, mailboxes: list[str], token: str
) -> list[Finding]:
    now = clock.now()
    denied: dict[str, GraphError] = {}
    findings: list[Finding] = []
    for mailbox in mailboxes:
        try:
            await graph.calendar_view(mailbox, now, now + timedelta(hours=1), top=1)
        except GraphError as exc:
            if exc.status == 403:
                denied[mailbox] = exc
            else:
                findings.append(Finding(f"mailbox {mailbox}", False, str(exc)))
            continue
        findings.append(Finding(f"mailbox {mailbox}", True, "calendar readable"))
    if mailboxes and len(denied) == len(mailboxes):
        roles = token_roles(token)
        granted = f" The token's roles are {roles}." if roles is not None else ""
        return [
            Finding(
                "permission Calendars.Read",
                False,
                "missing Calendars.Read: Graph answered 403 for every mailbox "
                f"({next(iter(denied.values())).code}). Grant the application permission "
                "Calendars.Read through an RBAC for Applications role assignment (Application "
                "Calendars.Read) whose scope covers the rooms." + granted,
            )
        ]
    for mailbox, error in denied.items():
        findings.append(
            Finding(
                f"mailbox {mailbox}",
                False,
                f"outside the RBAC scope: 403 {error.code} for this mailbox only "
                f"({error.message}). "
                "Add it to the management scope, then verify with "
                f"Test-ServicePrincipalAuthorization -Resource {mailbox}.",
            )
        )
    return findings


async def check_subscription(
    graph: GraphClient, clock: Clock, mailbox: str, notification_url: str
) -> Finding:
    """Create a short-lived subscription on one readable mailbox and delete it again: the only
    sure test that Graph lets this app subscribe (Calendars.ReadBasic alone reads, but cannot)."""
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": notification_url,
        "resource": f"users/{quote(mailbox, safe='@')}/events",
        "expirationDateTime": to_graph_utc(clock.now() + timedelta(minutes=45)),
        "clientState": secrets.token_urlsafe(24),
    }
    try:
        created = await graph.create_subscription(body, mailbox=mailbox)
    except GraphError as exc:
        if exc.status == 409:
            return Finding("subscriptions", True, f"{mailbox} already has this app's subscription")
        if exc.status == 403:
            return Finding(
                "permission Calendars.Read",
                False,
                f"missing Calendars.Read: the calendar of {mailbox} is readable but Graph refused "
                f"a subscription (403 {exc.code}: {exc.message}). Subscriptions need the "
                "application permission Calendars.Read; Calendars.ReadBasic is not enough.",
            )
        return Finding("subscriptions", False, f"creating a test subscription failed: {exc}")
    try:
        await graph.delete_subscription(str(created["id"]), mailbox=mailbox)
    except GraphError as exc:
        return Finding(
            "subscriptions", False, f"test subscription {created.get('id')} not deleted: {exc}"
        )
    return Finding(
        "subscriptions", True, f"a test subscription on {mailbox} was created and removed"
    )


async def check_notification_url(
    http: httpx.AsyncClient, url: str, *, label: str = "notificationUrl", timeout_s: float = 10.0
) -> Finding:
    shown = redact_urls(url)  # a Function key in the URL stays out of the report
    token = f"Validation: Testing client application reachability {secrets.token_hex(8)}"
    target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token)}"
    try:
        response = await http.post(
            target,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            content=b"",
            timeout=timeout_s,
        )
    except httpx.TimeoutException:
        return Finding(
            label, False, f"{shown} did not answer within {timeout_s:g} s (Graph's limit)"
        )
    except httpx.HTTPError as exc:
        return Finding(label, False, f"{shown} is unreachable: {redact_urls(str(exc))}")
    if response.status_code != 200:
        return Finding(label, False, f"{shown} answered {response.status_code}, Graph needs 200")
    if not response.headers.get("content-type", "").startswith("text/plain"):
        return Finding(
            label, False, f"{shown} answered {response.headers.get('content-type')}, not text/plain"
        )
    if response.text != token:
        return Finding(
            label,
            False,
            f"{shown} did not echo the decoded validation token (got {response.text[:80]!r})",
        )
    return Finding(label, True, f"{shown} answers Graph's validation handshake")


async def run_check(
    *,
    tokens: TokenProvider,
    graph: GraphClient,
    clock: Clock,
    http: httpx.AsyncClient,
    mailboxes: list[str],
    notification_urls: list[tuple[str, str]],
) -> list[Finding]:
    findings: list[Finding] = []
    credentials, token = await check_credentials(tokens)
    findings.append(credentials)
    if token is not None:
        try:
            findings.extend(await check_mailboxes(graph, clock, mailboxes, token))
        except ConnectorError as exc:
            findings.append(Finding("graph", False, str(exc)))
    url_findings = [
        await check_notification_url(http, url, label=label) for label, url in notification_urls
    ]
    readable = [
        f.check.removeprefix("mailbox ")
        for f in findings
        if f.ok and f.check.startswith("mailbox ")
    ]
    if readable and notification_urls and all(f.ok for f in url_findings):
        try:
            findings.append(
                await check_subscription(graph, clock, readable[0], notification_urls[0][1])
            )
        except ConnectorError as exc:
            findings.append(Finding("subscriptions", False, str(exc)))
    return findings + url_findings
