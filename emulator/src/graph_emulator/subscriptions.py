"""``/v1.0/subscriptions``: creating, listing, renewing, reauthorizing and deleting change
notification subscriptions on mailbox calendars, with Graph's rules:

* the validation handshake against ``notificationUrl`` and then ``lifecycleNotificationUrl`` (a
  second call even when they are the same URL): 200, ``text/plain``, the decoded token, within
  ``validation_timeout_s``; otherwise ``400`` and no subscription;
* ``https`` URLs only unless ``allow_http_notifications``;
* ``409`` for a second subscription of one app on the same resource and change types;
* expiry at most ``subscription_max_minutes`` ahead, raised to ``subscription_min_minutes``;
* ``clientState`` length, 1,000 subscriptions per mailbox across all apps (``403``);
* the subscription API's own rate limits per app and tenant (``429`` with ``Retry-After``).

``install(state)`` puts the ``SubscriptionHub`` on the state as its change sink and returns the
routes with the delivery workers and the expiry sweep as start-up work.

It is longer than the emulator's other modules because Graph's subscription rules above are
checked together on each request; the delivery of notifications is in ``delivery``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from graph_emulator.auth import AppPrincipal, authenticate, require_mailbox
from graph_emulator.delivery import DeliveryEngine, DeliverySettings
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.extension import Extension
from graph_emulator.faults import FaultRegistry
from graph_emulator.lifecycle import (
    LifecycleNotifier,
    LifecycleSettings,
    Subscription,
    SubscriptionHub,
)

if TYPE_CHECKING:
    from graph_emulator.config import EmulatorConfig
    from graph_emulator.state import EmulatorState

CHANGE_TYPES = ("created", "updated", "deleted")
TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
EVENTS_RESOURCE = re.compile(
    r"^/?users/(?P<user>[^/]+)(?:/calendar|/calendars/[^/]+)?/events/?$", re.IGNORECASE
)
SINGLE_EVENT = re.compile(r"^/?(users/[^/]+|me)(/calendars?(/[^/]+)?)?/events/[^/]+/?$", re.I)
ME_RESOURCE = re.compile(r"^/?me(/|$)", re.IGNORECASE)
PATCHABLE = {"expirationDateTime", "notificationUrl"}
# The properties of microsoft.graph.subscription. Graph reads bodies case-sensitively: a property
# it does not know (``clientstate``, ``lifecycleNotificationURL``) is refused, not dropped.
SUBSCRIPTION_PROPERTIES = {
    "id",
    "resource",
    "changeType",
    "clientState",
    "notificationUrl",
    "lifecycleNotificationUrl",
    "expirationDateTime",
    "applicationId",
    "creatorId",
    "includeResourceData",
    "latestSupportedTlsVersion",
    "encryptionCertificate",
    "encryptionCertificateId",
    "notificationQueryOptions",
    "notificationUrlAppId",
}
# Edm.DateTimeOffset as OData writes it: extended ISO 8601 with a "T", seconds optional,
# up to 7 fractional digits; without an offset the instant is read as UTC.
DATE_TIME_OFFSET = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})?$", re.IGNORECASE
)
VALIDATION_FAILED = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK "
    "to validation request."
)


@dataclass
class RateWindow:
    """Sliding-window counter per key: ``wait`` answers the seconds until one more request is
    allowed (None: now), ``record`` counts one."""

    limit: int
    window_s: float
    hits: dict[str, deque[float]] = field(default_factory=dict)

    def wait(self, key: str, now: float) -> int | None:
        q = self.hits.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if len(q) >= self.limit:
            return max(1, int(q[len(q) - self.limit] + self.window_s - now + 0.999))
        return None

    def record(self, key: str, now: float) -> int:
        """Count one request; answers how many the key now holds in the window."""
        q = self.hits.setdefault(key, deque())
        q.append(now)
        return len(q)


@dataclass
class ApiLimit:
    """One kind of subscription request, limited per app and tenant and per app."""

    name: str
    per_app_tenant: RateWindow
    per_app: RateWindow


@dataclass
class SubscriptionApiLimits:
    """The subscription API's limits (current documentation): writes (POST, PATCH, DELETE)
    500 per app and tenant and 2,000 per app; reauthorize 1,000 / 4,000; get by id 500 / 2,000;
    list 25 / 40; each per 20 seconds."""

    writes: ApiLimit
    reauthorize: ApiLimit
    get_one: ApiLimit
    list_all: ApiLimit

    @classmethod
    def from_config(cls, config: EmulatorConfig) -> SubscriptionApiLimits:
        window = config.subscription_limit_window_s

        def limit(name: str, per_app_tenant: int, per_app: int) -> ApiLimit:
            return ApiLimit(name, RateWindow(per_app_tenant, window), RateWindow(per_app, window))

        return cls(
            writes=limit(
                "writes",
                config.subscription_writes_per_app_tenant,
                config.subscription_writes_per_app,
            ),
            reauthorize=limit(
                "reauthorize",
                config.subscription_reauthorize_per_app_tenant,
                config.subscription_reauthorize_per_app,
            ),
            get_one=limit(
                "get", config.subscription_get_per_app_tenant, config.subscription_get_per_app
            ),
            list_all=limit(
                "list", config.subscription_list_per_app_tenant, config.subscription_list_per_app
            ),
        )


def extension_error(operation: str, status: str, reason: str, code: int) -> GraphError:
    message = f"Operation: {operation}; Exception: [Status Code: {status}; Reason: {reason}]"
    return GraphError(code, "ExtensionError", message)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type "
            "header is set and payload is of valid JSON format."
        ) from exc
    if not isinstance(data, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    return data


def check_properties(body: dict[str, Any]) -> None:
    for key in body:
        if key not in SUBSCRIPTION_PROPERTIES and not key.startswith("@odata."):
            raise bad_request(
                f"The property '{key}' does not exist on type 'microsoft.graph.subscription'. "
                "Make sure to only use property names that are defined by the type.",
                "RequestBodyRead",
            )


def parse_date_time_offset(value: Any, name: str) -> dt.datetime:
    """A Graph body's Edm.DateTimeOffset: nothing but the OData format is accepted."""
    if not isinstance(value, str) or not DATE_TIME_OFFSET.match(value.strip()):
        raise bad_request(
            f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset' "
            f"of property '{name}'.",
            "RequestBodyRead",
        )
    return parse_time(value, name)


def parse_time(value: Any, name: str) -> dt.datetime:
    """Any ISO 8601 instant Python reads (the control API's bodies); no offset means UTC."""
    if not isinstance(value, str):
        raise bad_request(f"Invalid value for '{name}'.", "InvalidRequest")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Graph sends 7 fractional digits; Python reads at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise bad_request(f"Invalid value for '{name}': '{value}'.", "InvalidRequest") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


class SubscriptionApi:
    def __init__(
        self,
        state: EmulatorState,
        hub: SubscriptionHub,
        *,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.state = state
        self.hub = hub
        self.limits = SubscriptionApiLimits.from_config(state.config)
        # Per subscription: the last reauthorization's kind ("reauthorize" or "renew") and time.
        self._last_reauthorization: dict[str, tuple[str, dt.datetime]] = {}
        self.client_factory = client_factory or (lambda: httpx.AsyncClient(verify=False))  # noqa: S501

    # -- rules ------------------------------------------------------------------------------------

    def _rate(self, limit: ApiLimit, principal: AppPrincipal) -> None:
        """Count the request against both of its budgets, or refuse it (429) if either is spent;
        a refused request spends neither."""
        now = self.state.clock.monotonic()
        tenant_key = f"{principal.app_id}/{self.state.tenant_id}"
        waits = [
            w
            for w in (
                limit.per_app_tenant.wait(tenant_key, now),
                limit.per_app.wait(principal.app_id, now),
            )
            if w is not None
        ]
        if not waits:
            counters = self.state.counters
            counters.peak(
                f"subscription_{limit.name}_peak", limit.per_app_tenant.record(tenant_key, now)
            )
            counters.peak(
                f"subscription_{limit.name}_peak_per_app",
                limit.per_app.record(principal.app_id, now),
            )
            return
        self.state.counters.incr("subscription_api_throttled")
        self.state.counters.record_app_throttled(principal.app_id)
        self.state.counters.incr(f"subscription_{limit.name}_throttled")
        raise GraphError(
            429,
            "TooManyRequests",
            "Too many requests to the subscription API. Retry after the delay given in "
            "the Retry-After header.",
            headers={"Retry-After": str(max(waits))},
        )

    def _expiration(self, value: Any) -> dt.datetime:
        config = self.state.config
        requested = parse_date_time_offset(value, "expirationDateTime")
        now = self.state.clock.now()
        if requested > now + dt.timedelta(minutes=config.subscription_max_minutes):
            raise bad_request(
                "Subscription expiration can only be "
                f"{config.subscription_max_minutes} minutes in the future.",
                "InvalidRequest",
            )
        return max(requested, now + dt.timedelta(minutes=config.subscription_min_minutes))

    def _check_url(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise bad_request(f"Missing or invalid '{name}'.", "InvalidRequest")
        url = value.strip()
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL as exc:
            raise bad_request(f"Invalid '{name}': '{url}'.", "InvalidRequest") from exc
        if scheme == "http" and self.state.config.allow_http_notifications:
            return url
        if scheme != "https":
            raise bad_request(
                f"Subscription validation request failed. '{name}' must use the https scheme.",
                "ValidationError",
            )
        return url

    async def _handshake(self, url: str) -> None:
        token = (
            "Validation: Testing client application reachability for subscription Request-Id: "
            + str(uuid.uuid4())
        )
        target = url + ("&" if "?" in url else "?") + "validationToken=" + quote(token, safe="")
        timeout = self.state.config.validation_timeout_s
        self.state.counters.incr("validation_requests")
        async with self.client_factory() as client:
            try:
                response = await client.post(
                    target,
                    content=b"",
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                    timeout=timeout,
                )
            except httpx.TimeoutException as exc:
                raise bad_request(
                    "Subscription validation request timed out.", "ValidationError"
                ) from exc
            except httpx.HTTPError as exc:
                raise bad_request(VALIDATION_FAILED, "ValidationError") from exc
        if response.status_code != 200:
            raise bad_request(VALIDATION_FAILED, "ValidationError")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "text/plain" or response.text != token:
            raise bad_request(
                "Subscription validation request failed. Response must exactly match "
                "validationToken query parameter.",
                "ValidationError",
            )

    def _check_spacing(self, sub: Subscription, kind: str, operation: str) -> None:
        """Graph: never both reauthorize and renew (PATCH) one subscription within 10 minutes.
        Repeating the same kind is allowed (the rate limits apply)."""
        last = self._last_reauthorization.get(sub.id)
        if last is None or last[0] == kind:
            return
        spacing = dt.timedelta(seconds=self.state.config.reauthorize_renew_spacing_s)
        since = self.state.clock.now() - last[1]
        if since < spacing:
            other = "reauthorized" if last[0] == "reauthorize" else "renewed"
            wait = int((spacing - since).total_seconds()) + 1
            raise extension_error(
                operation,
                "Conflict",
                f"The subscription was {other} {int(since.total_seconds())} seconds ago; "
                "reauthorizing and renewing one subscription within "
                f"{int(spacing.total_seconds()) // 60} minutes is not allowed. Retry in {wait} "
                "seconds.",
                409,
            )

    def _reauthorized(self, sub: Subscription, kind: str) -> None:
        now = self.state.clock.now()
        self._last_reauthorization[sub.id] = (kind, now)
        sub.last_reauthorized = now
        self.hub.lifecycle.schedule_first(sub, now)

    def _resource_mailbox(self, resource: Any) -> str:
        if not isinstance(resource, str) or not resource.strip():
            raise bad_request("Missing or invalid 'resource'.", "InvalidRequest")
        resource = resource.strip()
        if ME_RESOURCE.match(resource):
            raise bad_request("/me request is only valid with delegated authentication flow.")
        match = EVENTS_RESOURCE.match(resource)
        if match is None or SINGLE_EVENT.match(resource):
            raise bad_request("parameter 'Resource' is not supported.", "InvalidRequest")
        return match.group("user")

    # -- handlers -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        principal = await authenticate(request, self.state)
        self._rate(self.limits.writes, principal)
        body = parse_body(await request.body())
        check_properties(body)
        for required in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if body.get(required) in (None, ""):
                raise bad_request(f"Missing required property '{required}'.", "InvalidRequest")
        user = self._resource_mailbox(body["resource"])
        kinds = [k.strip() for k in str(body["changeType"]).split(",") if k.strip()]
        if not kinds or any(k not in CHANGE_TYPES for k in kinds):
            raise bad_request(
                f"Invalid value '{body['changeType']}' for 'changeType'.", "InvalidRequest"
            )
        client_state = body.get("clientState")
        limit = self.state.config.client_state_max_length
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > limit
        ):
            raise bad_request(
                f"'clientState' must be at most {limit} characters.", "InvalidRequest"
            )
        if body.get("includeResourceData") is True:
            raise bad_request(
                "includeResourceData is not supported by this emulator; subscribe without "
                "resource data and read the event.",
                "InvalidRequest",
            )
        tls = body.get("latestSupportedTlsVersion") or "v1_2"
        if tls not in TLS_VERSIONS:
            raise bad_request(
                f"Invalid value '{tls}' for 'latestSupportedTlsVersion'.", "InvalidRequest"
            )
        notification_url = self._check_url(body["notificationUrl"], "notificationUrl")
        lifecycle_url = None
        if body.get("lifecycleNotificationUrl") is not None:
            lifecycle_url = self._check_url(
                body["lifecycleNotificationUrl"], "lifecycleNotificationUrl"
            )
        expiration = self._expiration(body["expirationDateTime"])
        mailbox = self.state.directory.resolve(user)
        try:
            require_mailbox(principal, mailbox, need="read")
        except GraphError as exc:
            raise extension_error("Create", "Forbidden", exc.message, 403) from exc
        change_types = frozenset(kinds)
        self._check_room(principal, mailbox.id, change_types)
        await self._handshake(notification_url)
        if lifecycle_url is not None:
            await self._handshake(lifecycle_url)
        # Another create may have finished while the endpoints were being validated.
        self._check_room(principal, mailbox.id, change_types)
        sub = Subscription(
            id=str(uuid.uuid4()),
            resource=str(body["resource"]).strip(),
            mailbox_id=mailbox.id,
            change_types=change_types,
            change_type=",".join(kinds),
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=client_state,
            expiration=expiration,
            application_id=principal.app_id,
            tenant_id=self.state.tenant_id,
            latest_tls=tls,
        )
        self.hub.add(sub)
        self.state.counters.incr("subscriptions_created")
        return JSONResponse(sub.to_graph(), status_code=201)

    def _check_room(
        self, principal: AppPrincipal, mailbox_id: str, change_types: frozenset[str]
    ) -> None:
        """409 for a duplicate of this app's, 403 when the mailbox has its quota."""
        for existing in self.hub.for_app(principal.app_id):
            if existing.mailbox_id == mailbox_id and existing.change_types == change_types:
                raise extension_error(
                    "Create",
                    "Conflict",
                    f"Subscription Id {existing.id} already exists for the requested combination",
                    409,
                )
        if self.hub.count_for_mailbox(mailbox_id) >= self.state.config.subscriptions_per_mailbox:
            raise extension_error(
                "Create",
                "Forbidden",
                "The maximum number of subscriptions for this mailbox has been reached.",
                403,
            )

    def _own(self, principal: AppPrincipal, sub_id: str, operation: str) -> Subscription:
        sub = self.hub.live(sub_id)
        if sub is None or sub.application_id != principal.app_id:
            raise extension_error(
                operation, "NotFound", f"The object '{sub_id}' doesn't exist.", 404
            )
        return sub

    async def list_all(self, request: Request) -> Response:
        principal = await authenticate(request, self.state)
        self._rate(self.limits.list_all, principal)
        subs = self.hub.for_app(principal.app_id)
        values = []
        for sub in subs:
            item = sub.to_graph()
            del item["@odata.context"]
            values.append(item)
        return JSONResponse(
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions",
                "value": values,
            }
        )

    async def get_one(self, request: Request) -> Response:
        principal = await authenticate(request, self.state)
        self._rate(self.limits.get_one, principal)
        sub = self._own(principal, request.path_params["id"], "Get")
        return JSONResponse(sub.to_graph())

    async def update(self, request: Request) -> Response:
        principal = await authenticate(request, self.state)
        self._rate(self.limits.writes, principal)
        body = parse_body(await request.body())
        sub = self._own(principal, request.path_params["id"], "Update")
        check_properties(body)
        self._check_spacing(sub, "renew", "Update")
        unknown = [k for k in body if k not in PATCHABLE and not k.startswith("@odata")]
        if unknown:
            raise bad_request(f"Property '{unknown[0]}' cannot be updated.", "InvalidRequest")
        expiration = sub.expiration
        if "expirationDateTime" in body:
            expiration = self._expiration(body["expirationDateTime"])
        url = sub.notification_url
        if "notificationUrl" in body:
            url = self._check_url(body["notificationUrl"], "notificationUrl")
            if url != sub.notification_url:
                await self._handshake(url)
        if self.hub.live(sub.id) is None:
            raise extension_error(
                "Update", "NotFound", f"The object '{sub.id}' doesn't exist.", 404
            )
        sub.expiration = expiration
        sub.notification_url = url
        self._reauthorized(sub, "renew")
        self.state.counters.incr("subscriptions_renewed")
        return JSONResponse(sub.to_graph())

    async def reauthorize(self, request: Request) -> Response:
        principal = await authenticate(request, self.state)
        self._rate(self.limits.reauthorize, principal)
        sub = self._own(principal, request.path_params["id"], "Reauthorize")
        self._check_spacing(sub, "reauthorize", "Reauthorize")
        self._reauthorized(sub, "reauthorize")
        self.state.counters.incr("subscriptions_reauthorized")
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        principal = await authenticate(request, self.state)
        self._rate(self.limits.writes, principal)
        sub = self._own(principal, request.path_params["id"], "Delete")
        self.hub.discard(sub.id)
        self._last_reauthorization.pop(sub.id, None)
        self.state.counters.incr("subscriptions_deleted")
        return Response(status_code=204)

    def routes(self) -> list[BaseRoute]:
        def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Any:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request)
                except GraphError as exc:
                    return exc.to_response(now=self.state.clock.now())

            return endpoint

        return [
            Route("/v1.0/subscriptions", guarded(self.create), methods=["POST"]),
            Route("/v1.0/subscriptions", guarded(self.list_all), methods=["GET"]),
            Route("/v1.0/subscriptions/{id}", guarded(self.get_one), methods=["GET"]),
            Route("/v1.0/subscriptions/{id}", guarded(self.update), methods=["PATCH"]),
            Route("/v1.0/subscriptions/{id}", guarded(self.delete), methods=["DELETE"]),
            Route(
                "/v1.0/subscriptions/{id}/reauthorize",
                guarded(self.reauthorize),
                methods=["POST"],
            ),
        ]


def build_hub(
    state: EmulatorState,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    settings: DeliverySettings | None = None,
) -> SubscriptionHub:
    config = state.config
    faults = FaultRegistry(
        clock=state.clock,
        rng=random.Random(state.rng.random()),  # noqa: S311 - reproducible faults
        counters=state.counters,
    )
    engine = DeliveryEngine(
        clock=state.clock,
        client=httpx.AsyncClient(transport=transport, verify=False),  # noqa: S501
        counters=state.counters,
        faults=faults,
        settings=settings
        or DeliverySettings(
            ack_timeout_s=config.delivery_timeout_s,
            retry_timeout_s=config.retry_timeout_s,
            retry_window_s=config.retry_window_s,
        ),
    )
    lifecycle = LifecycleNotifier(
        engine=engine, counters=state.counters, settings=LifecycleSettings()
    )
    hub = SubscriptionHub(state=state, engine=engine, lifecycle=lifecycle, faults=faults)
    engine.on_dropped = hub.dropped
    return hub


def install(state: EmulatorState) -> Extension:
    hub = build_hub(state)
    state.notifications = hub
    state.mailbox_request_hooks.append(hub.faults.check_mailbox_request)
    api = SubscriptionApi(state, hub)
    return Extension(routes=api.routes(), startup=hub.start, shutdown=hub.stop)
