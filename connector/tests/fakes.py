"""Faithful stand-ins for the test's far ends: a virtual clock, Graph over httpx.MockTransport
(answering in the exact shapes of testdata/graph-samples), and the identity platform for MSAL."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"
GRAPH = "https://graph.test/v1.0"
AUTHORITY_HOST = "https://login.test"
TENANT_ID = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
CLIENT_ID = "2f6d9b1e-3c4a-4d5e-8f70-9a1b2c3d4e5f"
CLIENT_SECRET = "connector-test-secret"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


class FakeClock:
    """Virtual time: ``sleep`` advances it instead of waiting (and yields to the loop)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime.now(UTC).replace(microsecond=0)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.moment += timedelta(seconds=max(0.0, seconds))
        await asyncio.sleep(0)


def graph_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")


@dataclass
class FakeGraph:
    """Subscriptions and calendarView as Graph answers them, with the failure modes we need."""

    clock: FakeClock
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)  # mailboxes outside the app's scope
    no_permission: bool = False
    read_basic_only: bool = False  # Calendars.ReadBasic: calendars readable, no subscriptions
    hidden_from_list: set[str] = field(default_factory=set)  # ids a listing misses once
    throttle_next: int = 0
    list_page_size: int = 2
    requests: list[tuple[str, str]] = field(default_factory=list)
    in_flight: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_in_flight: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    delay_s: float = 0.0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_subscription(self, mailbox: str, *, expires_in: timedelta, **over: Any) -> str:
        sub = copy.deepcopy(sample("subscription-created.json"))
        sub.pop("@odata.context")
        sub_id = f"sub-{next(self._ids):04d}"
        sub.update(
            id=sub_id,
            resource=f"users/{mailbox}/events",
            expirationDateTime=(self.clock.now() + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        sub.update(over)
        self.subscriptions[sub_id] = sub
        return sub_id

    def by_mailbox(self) -> dict[str, dict[str, Any]]:
        return {s["resource"].split("/")[1].lower(): s for s in self.subscriptions.values()}

    @staticmethod
    def error(
        status: int,
        name: str | None = None,
        code: str = "",
        message: str = "",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = sample(name) if name else {"error": {"code": code, "message": message}}
        return httpx.Response(status, json=body, headers=headers)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        path = unquote(url.path).removeprefix("/v1.0")
        self.requests.append((request.method, path))
        if (
            request.headers.get("authorization")
            != "Bearer " + sample("token-response.json")["access_token"]
        ):
            return self.error(
                401, code="InvalidAuthenticationToken", message="Access token is empty."
            )
        mailbox = path.split("/")[2].lower() if path.startswith("/users/") else ""
        self.in_flight[mailbox] += 1
        self.max_in_flight[mailbox] = max(self.max_in_flight[mailbox], self.in_flight[mailbox])
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.throttle_next > 0:
                self.throttle_next -= 1
                return self.error(429, "error-throttled.json", headers={"Retry-After": "7"})
            return self._route(request, path, parse_qs(url.query))
        finally:
            self.in_flight[mailbox] -= 1

    def _route(
        self, request: httpx.Request, path: str, query: dict[str, list[str]]
    ) -> httpx.Response:
        if path == "/subscriptions" and request.method == "GET":
            return self._list(query)
        if path == "/subscriptions" and request.method == "POST":
            return self._create(json.loads(request.content))
        if path.startswith("/subscriptions/"):
            sub_id = path.split("/")[2]
            if sub_id not in self.subscriptions:
                return self.error(
                    404, code="ResourceNotFound", message=f"Subscription {sub_id} not found"
                )
            if request.method == "DELETE":
                del self.subscriptions[sub_id]
                return httpx.Response(204)
            if request.method == "PATCH":
                patch = json.loads(request.content)
                if set(patch) - {"expirationDateTime", "notificationUrl"}:
                    return self.error(400, code="InvalidRequest", message="only expiry and URL")
                self.subscriptions[sub_id].update(patch)
                return httpx.Response(200, json=self.subscriptions[sub_id])
        if path.startswith("/users/") and path.endswith("/calendar/calendarView"):
            return self._calendar_view(path.split("/")[2], query, request)
        return self.error(400, code="BadRequest", message=f"unsupported {request.method} {path}")

    def _list(self, query: dict[str, list[str]]) -> httpx.Response:
        visible = [
            s for k, s in sorted(self.subscriptions.items()) if k not in self.hidden_from_list
        ]
        self.hidden_from_list.clear()
        skip = int(query.get("$skiptoken", ["0"])[0])
        page = visible[skip : skip + self.list_page_size]
        body: dict[str, Any] = {"@odata.context": f"{GRAPH}/$metadata#subscriptions", "value": page}
        if skip + self.list_page_size < len(visible):
            body["@odata.nextLink"] = (
                f"{GRAPH}/subscriptions?$skiptoken={skip + self.list_page_size}"
            )
        return httpx.Response(200, json=body)

    def _allowed(self, mailbox: str) -> httpx.Response | None:
        if self.no_permission:
            return self.error(
                403,
                code="ErrorAccessDenied",
                message="Access is denied. Check credentials and try again.",
            )
        if mailbox.lower() in self.denied:
            return self.error(403, "error-access-denied.json")
        return None

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        mailbox = body["resource"].split("/")[1]
        if (denied := self._allowed(mailbox)) is not None:
            return denied
        if self.read_basic_only:
            return self.error(
                403,
                code="ExtensionError",
                message="Operation: Create; Exception: [Status Code: Forbidden]",
            )
        for existing in self.subscriptions.values():
            if existing["resource"].lower() == body["resource"].lower():
                return self.error(
                    409,
                    code="ExtensionError",
                    message=f"Subscription Id {existing['id']} already exists",
                )
        expires = datetime.fromisoformat(body["expirationDateTime"].replace("Z", "+00:00"))
        if expires - self.clock.now() > timedelta(minutes=10_080):
            return self.error(
                400, code="ExtensionError", message="expiration too far in the future"
            )
        sub_id = self.add_subscription(mailbox, expires_in=timedelta(0))
        sub = self.subscriptions[sub_id]
        sub.update(
            {
                k: body.get(k)
                for k in (
                    "changeType",
                    "notificationUrl",
                    "clientState",
                    "lifecycleNotificationUrl",
                    "expirationDateTime",
                )
            }
        )
        return httpx.Response(
            201, json={"@odata.context": f"{GRAPH}/$metadata#subscriptions/$entity", **sub}
        )

    def _calendar_view(
        self, mailbox: str, query: dict[str, list[str]], request: httpx.Request
    ) -> httpx.Response:
        if (denied := self._allowed(mailbox)) is not None:
            return denied
        assert request.headers.get("prefer") == 'outlook.timezone="UTC"'
        start = datetime.fromisoformat(query["startDateTime"][0].replace("Z", "+00:00"))
        end = datetime.fromisoformat(query["endDateTime"][0].replace("Z", "+00:00"))

        def instant(value: dict[str, str]) -> datetime:
            return datetime.fromisoformat(value["dateTime"][:26]).replace(tzinfo=UTC)

        inside = [
            e
            for e in self.events.get(mailbox.lower(), [])
            if instant(e["start"]) < end and instant(e["end"]) > start
        ]
        top = min(int(query.get("$top", ["10"])[0]), 1000)
        skip = int(query.get("$skip", ["0"])[0])
        body: dict[str, Any] = {"value": inside[skip : skip + top]}
        if skip + top < len(inside):
            body["@odata.nextLink"] = (
                f"{GRAPH}/users/{mailbox}/calendar/calendarView?startDateTime={query['startDateTime'][0]}"
                f"&endDateTime={query['endDateTime'][0]}&%24select={query['$select'][0]}"
                f"&%24top={top}&%24skip={skip + top}"
            )
        return httpx.Response(200, json=body)


def identity_platform(*, secret: str = CLIENT_SECRET) -> httpx.MockTransport:
    """The endpoints MSAL calls: OpenID configuration and the client-credentials token."""
    base = f"{AUTHORITY_HOST}/{TENANT_ID}"

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/v2.0/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                },
            )
        if path == f"/{TENANT_ID}/oauth2/v2.0/token":
            form = parse_qs(request.content.decode())
            if form.get("client_secret") != [secret] or form.get("client_id") != [CLIENT_ID]:
                return httpx.Response(
                    401,
                    json={
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                    },
                )
            return httpx.Response(200, json=sample("token-response.json"))
        return httpx.Response(404, json={"error": "not_found"})

    return httpx.MockTransport(handle)
