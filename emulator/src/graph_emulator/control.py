"""The control API under ``/_emulator`` (not part of Graph; JSON in and out): fault injection
(notifications, mailboxes, the token endpoint, token revocation),
counters, delivery pause, subscription removal and silencing, the virtual clock, calendar changes
made as users would make them, and the booking simulator.

Errors use Graph's error body, so one client-side error handler reads both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from graph_emulator.errors import GraphError, bad_request, not_found
from graph_emulator.extension import Extension
from graph_emulator.faults import ALL_MAILBOXES, MAILBOX_FAULT_KINDS, NOTIFICATION_FAULT_KINDS
from graph_emulator.identity_faults import TOKEN_FAULT_KINDS
from graph_emulator.lifecycle import LIFECYCLE_EVENTS, SubscriptionHub
from graph_emulator.simulator import BookingSimulator, SimulatorSettings
from graph_emulator.subscriptions import parse_body, parse_time

if TYPE_CHECKING:
    from graph_emulator.state import EmulatorState

Handler = Callable[[Request], Awaitable[Response]]


def _number(body: dict[str, Any], name: str, default: float | None, *, low: float = 0) -> Any:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise bad_request(f"'{name}' must be a number >= {low}.")
    return value


def _graph_time(value: Any, name: str) -> dict[str, str]:
    when = parse_time(value, name)
    return {"dateTime": when.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


class ControlApi:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.simulator: BookingSimulator | None = None

    @property
    def hub(self) -> SubscriptionHub:
        hub = self.state.notifications
        if not isinstance(hub, SubscriptionHub):
            raise GraphError(409, "NotInstalled", "Subscriptions and delivery are not installed.")
        return hub

    # -- faults ------------------------------------------------------------------------

    async def faults(self, request: Request) -> Response:
        token = self.state.identity_faults.describe()
        return JSONResponse({**self.hub.faults.describe(), "token": token})

    async def add_notification_fault(self, request: Request) -> Response:
        body = parse_body(await request.body())
        kind = body.get("kind")
        if kind not in NOTIFICATION_FAULT_KINDS:
            raise bad_request(f"'kind' must be one of {list(NOTIFICATION_FAULT_KINDS)}.")
        count = _number(body, "count", None, low=1)
        probability = _number(body, "probability", 1.0)
        if probability > 1:
            raise bad_request("'probability' must be between 0 and 1.")
        delay_s = _number(body, "delay_s", 60.0 if kind == "delay" else 0.0)
        sub = body.get("subscription_id")
        fault = self.hub.faults.set_notification_fault(
            kind,
            count=None if count is None else int(count),
            probability=float(probability),
            delay_s=float(delay_s),
            subscription_id=str(sub) if sub is not None else None,
        )
        return JSONResponse({"kind": kind, **fault.describe()}, status_code=201)

    async def clear_notification_faults(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        if kind is not None and kind not in NOTIFICATION_FAULT_KINDS:
            raise bad_request(f"'kind' must be one of {list(NOTIFICATION_FAULT_KINDS)}.")
        self.hub.faults.clear_notification_fault(kind)
        return Response(status_code=204)

    def _mailbox_key(self, value: Any) -> str:
        if value == ALL_MAILBOXES:
            return ALL_MAILBOXES
        if not isinstance(value, str):
            raise bad_request("'mailbox' (an id, a UPN or '*') is required.")
        return self.state.directory.resolve(value).id

    async def add_mailbox_fault(self, request: Request) -> Response:
        body = parse_body(await request.body())
        kind = body.get("kind")
        if kind not in MAILBOX_FAULT_KINDS:
            raise bad_request(f"'kind' must be one of {list(MAILBOX_FAULT_KINDS)}.")
        mailbox = self._mailbox_key(body.get("mailbox"))
        count = _number(body, "count", None, low=1)
        fault = self.hub.faults.set_mailbox_fault(
            mailbox,
            kind,
            count=None if count is None else int(count),
            probability=float(_number(body, "probability", 1.0)),
            retry_after_s=int(_number(body, "retry_after_s", 10)),
            timeout_s=float(_number(body, "timeout_s", 30.0)),
        )
        return JSONResponse({"mailbox": mailbox, **fault.describe()}, status_code=201)

    async def clear_mailbox_faults(self, request: Request) -> Response:
        mailbox = request.query_params.get("mailbox")
        key = None if mailbox is None else self._mailbox_key(mailbox)
        self.hub.faults.clear_mailbox_fault(key)
        return Response(status_code=204)

    async def add_token_fault(self, request: Request) -> Response:
        body = parse_body(await request.body())
        kind = body.get("kind")
        if kind not in TOKEN_FAULT_KINDS:
            raise bad_request(f"'kind' must be one of {list(TOKEN_FAULT_KINDS)}.")
        count = _number(body, "count", None, low=1)
        probability = _number(body, "probability", 1.0)
        if probability > 1:
            raise bad_request("'probability' must be between 0 and 1.")
        fault = self.state.identity_faults.set_token_fault(
            kind,
            count=None if count is None else int(count),
            probability=float(probability),
            retry_after_s=int(_number(body, "retry_after_s", 10)),
            timeout_s=float(_number(body, "timeout_s", 30.0)),
        )
        return JSONResponse(fault.describe(), status_code=201)

    async def clear_token_fault(self, request: Request) -> Response:
        self.state.identity_faults.clear_token_fault()
        return Response(status_code=204)

    async def revoke_tokens(self, request: Request) -> Response:
        body = parse_body(await request.body() or b"{}")
        client_id = body.get("client_id")
        if client_id is not None and (
            not isinstance(client_id, str) or self.state.apps.get(client_id) is None
        ):
            raise bad_request("'client_id' must name an app of the tenant.")
        return JSONResponse({"revoked": self.state.identity_faults.revoke(client_id)})

    async def expire_delta(self, request: Request) -> Response:
        body = parse_body(await request.body() or b"{}")
        mailbox = body.get("mailbox")
        mailbox_id = None if mailbox is None else self.state.directory.resolve(str(mailbox)).id
        return JSONResponse({"expired": self.state.delta.expire(mailbox_id=mailbox_id)})

    # -- subscriptions and delivery ---------------------------------------------------------------

    async def subscriptions(self, request: Request) -> Response:
        hub = self.hub
        now = self.state.clock.now()
        values = []
        for sub in hub.by_id.values():
            if sub.expiration <= now:
                continue
            values.append(
                {
                    **sub.to_graph(),
                    "mailboxId": sub.mailbox_id,
                    "silenced": hub.faults.is_silenced(sub.id),
                    "endpointHealth": hub.engine.health_of(sub.notification_url),
                }
            )
        return JSONResponse({"value": values})

    def _sub(self, request: Request) -> str:
        sub_id = str(request.path_params["id"])
        if self.hub.live(sub_id) is None:
            raise not_found(f"Subscription '{sub_id}' does not exist.", "ResourceNotFound")
        return sub_id

    async def remove_subscription(self, request: Request) -> Response:
        self.hub.remove(self._sub(request))
        return Response(status_code=204)

    async def silence(self, request: Request) -> Response:
        self.hub.faults.silence(self._sub(request))
        return Response(status_code=204)

    async def unsilence(self, request: Request) -> Response:
        self.hub.faults.unsilence(self._sub(request))
        return Response(status_code=204)

    async def lifecycle_event(self, request: Request) -> Response:
        sub_id = self._sub(request)
        body = parse_body(await request.body())
        event = body.get("event")
        if event not in LIFECYCLE_EVENTS:
            raise bad_request(f"'event' must be one of {list(LIFECYCLE_EVENTS)}.")
        hub = self.hub
        sub = hub.by_id[sub_id]
        if event == "subscriptionRemoved":
            hub.remove(sub_id)
        else:
            hub.lifecycle.send(sub, event)
        return Response(status_code=204)

    async def delivery(self, request: Request) -> Response:
        engine = self.hub.engine
        return JSONResponse(
            {
                "paused": engine.paused,
                "queued": engine.queued(),
                "endpoints": engine.describe_endpoints(),
            }
        )

    async def pause(self, request: Request) -> Response:
        self.hub.engine.pause()
        return Response(status_code=204)

    async def resume(self, request: Request) -> Response:
        self.hub.engine.resume()
        return Response(status_code=204)

    # -- counters and clock -----------------------------------------------------------------------

    async def counters(self, request: Request) -> Response:
        snapshot = self.state.counters.snapshot()
        for name in (
            "notifications_sent",
            "notifications_retried",
            "notifications_dropped",
            "notifications_duplicated",
        ):
            snapshot.setdefault(name, 0)
        return JSONResponse(snapshot)

    async def reset_counters(self, request: Request) -> Response:
        self.state.counters.reset()
        return Response(status_code=204)

    async def clock(self, request: Request) -> Response:
        clock = self.state.clock
        return JSONResponse({"now": clock.now().isoformat(), "virtual": clock.virtual})

    async def advance_clock(self, request: Request) -> Response:
        body = parse_body(await request.body())
        seconds = _number(body, "seconds", None)
        if seconds is None:
            raise bad_request("'seconds' is required.")
        if not self.state.clock.virtual:
            raise GraphError(409, "ClockNotVirtual", "Start the emulator with a virtual clock.")
        self.state.clock.advance(dt.timedelta(seconds=float(seconds)))
        if isinstance(self.state.notifications, SubscriptionHub):
            self.state.notifications.sweep()
        return JSONResponse({"now": self.state.clock.now().isoformat(), "virtual": True})

    # -- calendar changes as users make them ------------------------------------------------------

    async def book(self, request: Request) -> Response:
        room = self.state.directory.resolve(str(request.path_params["mailbox"]))
        body = parse_body(await request.body())
        organizer = body.get("organizer")
        if not isinstance(organizer, str) or "@" not in organizer:
            raise bad_request("'organizer' (an email address) is required.")
        event: dict[str, Any] = {
            "subject": str(body.get("subject") or "Meeting"),
            "start": _graph_time(body.get("start"), "start"),
            "end": _graph_time(body.get("end"), "end"),
            "attendees": [
                {
                    "type": "resource",
                    "emailAddress": {"address": room.upn, "name": room.display_name},
                }
            ],
        }
        for passthrough in ("recurrence", "sensitivity", "showAs", "isAllDay", "body"):
            if passthrough in body:
                event[passthrough] = body[passthrough]
        created = self.state.calendars.create_event(room.id, event, organizer=organizer)
        return JSONResponse(created, status_code=201)

    async def move(self, request: Request) -> Response:
        mailbox = str(request.path_params["mailbox"])
        body = parse_body(await request.body())
        patch = {
            "start": _graph_time(body.get("start"), "start"),
            "end": _graph_time(body.get("end"), "end"),
        }
        event = self.state.calendars.update_event(mailbox, request.path_params["id"], patch)
        return JSONResponse(event)

    async def edit(self, request: Request) -> Response:
        mailbox = str(request.path_params["mailbox"])
        body = parse_body(await request.body())
        event = self.state.calendars.update_event(mailbox, request.path_params["id"], body)
        return JSONResponse(event)

    async def cancel(self, request: Request) -> Response:
        mailbox = str(request.path_params["mailbox"])
        event_id = str(request.path_params["id"])
        if request.query_params.get("keep") == "true":
            return JSONResponse(self.state.calendars.cancel_event(mailbox, event_id))
        self.state.calendars.delete_event(mailbox, event_id)
        return Response(status_code=204)

    async def edit_occurrence(self, request: Request) -> Response:
        mailbox = str(request.path_params["mailbox"])
        body = parse_body(await request.body())
        original = parse_time(body.pop("originalStart", None), "originalStart")
        for name in ("start", "end"):
            if name in body and isinstance(body[name], str):
                body[name] = _graph_time(body[name], name)
        event = self.state.calendars.update_occurrence(
            mailbox, str(request.path_params["id"]), original, body
        )
        return JSONResponse(event)

    async def cancel_occurrence(self, request: Request) -> Response:
        mailbox = str(request.path_params["mailbox"])
        body = parse_body(await request.body())
        original = parse_time(body.get("originalStart"), "originalStart")
        self.state.calendars.cancel_occurrence(mailbox, str(request.path_params["id"]), original)
        return Response(status_code=204)

    # -- simulator ------------------------------------------------------------------------

    async def simulator_start(self, request: Request) -> Response:
        body = parse_body(await request.body() or b"{}")
        rooms = body.get("rooms")
        if rooms is not None and (
            not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms)
        ):
            raise bad_request("'rooms' must be a list of room ids or UPNs.")
        share = float(_number(body, "recurring_share", 0.2))
        if share > 1:
            raise bad_request("'recurring_share' must be between 0 and 1.")
        settings = SimulatorSettings(
            seed=int(_number(body, "seed", 1)),
            rate_per_s=float(_number(body, "rate_per_s", 5.0, low=0.001)),
            recurring_share=share,
            rooms=rooms,
        )
        near_now = _number(body, "near_now_hours", None, low=0.25)
        if near_now is not None and near_now > 24:
            raise bad_request("'near_now_hours' must be between 0.25 and 24.")
        settings.near_now_hours = None if near_now is None else float(near_now)
        max_actions = _number(body, "max_actions", None, low=1)
        settings.max_actions = None if max_actions is None else int(max_actions)
        if self.simulator is not None:
            await self.simulator.stop()
        self.simulator = BookingSimulator(self.state, settings)
        self.simulator.start()
        return JSONResponse(self.simulator.status(), status_code=201)

    async def simulator_stop(self, request: Request) -> Response:
        if self.simulator is not None:
            await self.simulator.stop()
        return await self.simulator_status(request)

    async def simulator_status(self, request: Request) -> Response:
        if self.simulator is None:
            return JSONResponse({"running": False})
        return JSONResponse(self.simulator.status())

    async def shutdown(self) -> None:
        if self.simulator is not None:
            await self.simulator.stop()

    # -- routing ------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        def guarded(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request)
                except GraphError as exc:
                    return exc.to_response(now=self.state.clock.now())

            return endpoint

        p = "/_emulator"
        m = f"{p}/mailboxes/{{mailbox}}/events"
        table: list[tuple[str, Handler, str]] = [
            (f"{p}/faults", self.faults, "GET"),
            (f"{p}/faults/notifications", self.add_notification_fault, "POST"),
            (f"{p}/faults/notifications", self.clear_notification_faults, "DELETE"),
            (f"{p}/faults/mailboxes", self.add_mailbox_fault, "POST"),
            (f"{p}/faults/mailboxes", self.clear_mailbox_faults, "DELETE"),
            (f"{p}/faults/token", self.add_token_fault, "POST"),
            (f"{p}/faults/token", self.clear_token_fault, "DELETE"),
            (f"{p}/tokens/revoke", self.revoke_tokens, "POST"),
            (f"{p}/delta/expire", self.expire_delta, "POST"),
            (f"{p}/subscriptions", self.subscriptions, "GET"),
            (f"{p}/subscriptions/{{id}}", self.remove_subscription, "DELETE"),
            (f"{p}/subscriptions/{{id}}/silence", self.silence, "POST"),
            (f"{p}/subscriptions/{{id}}/silence", self.unsilence, "DELETE"),
            (f"{p}/subscriptions/{{id}}/lifecycle", self.lifecycle_event, "POST"),
            (f"{p}/delivery", self.delivery, "GET"),
            (f"{p}/delivery/pause", self.pause, "POST"),
            (f"{p}/delivery/resume", self.resume, "POST"),
            (f"{p}/counters", self.counters, "GET"),
            (f"{p}/counters/reset", self.reset_counters, "POST"),
            (f"{p}/clock", self.clock, "GET"),
            (f"{p}/clock/advance", self.advance_clock, "POST"),
            (f"{p}/mailboxes/{{mailbox}}/bookings", self.book, "POST"),
            (f"{m}/{{id}}/move", self.move, "POST"),
            (f"{m}/{{id}}", self.edit, "PATCH"),
            (f"{m}/{{id}}", self.cancel, "DELETE"),
            (f"{m}/{{id}}/occurrences/edit", self.edit_occurrence, "POST"),
            (f"{m}/{{id}}/occurrences/cancel", self.cancel_occurrence, "POST"),
            (f"{p}/simulator", self.simulator_status, "GET"),
            (f"{p}/simulator/start", self.simulator_start, "POST"),
            (f"{p}/simulator/stop", self.simulator_stop, "POST"),
        ]
        return [Route(path, guarded(h), methods=[method]) for path, h, method in table]


def install(state: EmulatorState) -> Extension:
    api = ControlApi(state)
    return Extension(routes=api.routes(), shutdown=api.shutdown)
