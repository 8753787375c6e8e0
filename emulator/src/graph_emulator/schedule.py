"""``POST /users/{id}/calendar/getSchedule``: free/busy of up to 20 mailboxes as an
``availabilityView`` string (one digit per interval), ``scheduleItems`` and ``workingHours``."""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.auth import AppPrincipal, require_mailbox
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.expansion import Instance
from graph_emulator.pipeline import graph_root, mailbox_access, parse_prefer, read_json
from graph_emulator.timezones import UTC, find_zone, format_local, parse_local, require_zone

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from graph_emulator.state import EmulatorState

_PARAMETERS = ("schedules", "startTime", "endTime", "availabilityViewInterval")
_RANK = {"free": 0, "workingElsewhere": 1, "tentative": 2, "busy": 3, "oof": 4, "unknown": 0}
_DIGIT = {"free": "0", "tentative": "1", "busy": "2", "oof": "3", "unknown": "0"}


def _instant(body: dict[str, Any], name: str) -> dt.datetime:
    value = body.get(name)
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise bad_request(
            f"The '{name}' parameter must be a dateTimeTimeZone.", "ErrorInvalidParameter"
        )
    zone = require_zone(str(value.get("timeZone") or "UTC"))
    local = parse_local(value["dateTime"])
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone)
    return local.astimezone(dt.UTC)


def _when(value: dt.datetime, zone: ZoneInfo, zone_name: str) -> dict[str, str]:
    return {"dateTime": format_local(value.astimezone(zone)), "timeZone": zone_name}


def _schedule_error(schedule_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "scheduleId": schedule_id,
        "availabilityView": "",
        "scheduleItems": [],
        "error": {"message": message, "responseCode": code},
    }


def routes(state: EmulatorState) -> list[Route]:
    config = state.config

    def one_schedule(
        principal: AppPrincipal,
        schedule_id: str,
        start: dt.datetime,
        end: dt.datetime,
        interval: int,
        zone: ZoneInfo,
        zone_name: str,
    ) -> dict[str, Any]:
        mailbox = state.directory.find(schedule_id)
        if mailbox is None:
            return _schedule_error(
                schedule_id, "ErrorMailRecipientNotFound", "The specified recipient was not found."
            )
        try:
            require_mailbox(principal, mailbox, need="readbasic")
        except GraphError as denied:
            return _schedule_error(schedule_id, denied.code, denied.message)
        busy: list[Instance] = [
            i
            for i in state.calendars.instances(mailbox, start, end)
            if not i.field("isCancelled") and i.field("showAs") != "free"
        ]
        if len(busy) > config.schedule_max_items:
            return _schedule_error(
                schedule_id,
                "ErrorExceededFindCountLimit",
                "The number of calendar entries exceeds the allowed limit of "
                f"{config.schedule_max_items}.",
            )
        slots = math.ceil((end - start) / dt.timedelta(minutes=interval))
        view = []
        for n in range(slots):
            slot_start = start + dt.timedelta(minutes=interval * n)
            slot_end = min(slot_start + dt.timedelta(minutes=interval), end)
            status = "free"
            for item in busy:
                if item.start < slot_end and item.end > slot_start:
                    shown = str(item.field("showAs"))
                    if _RANK.get(shown, 0) > _RANK[status]:
                        status = shown
            if status == "workingElsewhere":
                view.append(config.schedule_working_elsewhere_digit)
            else:
                view.append(_DIGIT.get(status, "0"))
        items = []
        for item in busy:
            private = item.field("sensitivity") == "private"
            entry: dict[str, Any] = {"isPrivate": private, "status": item.field("showAs")}
            if not private:
                entry["subject"] = item.field("subject")
                entry["location"] = (item.field("location") or {}).get("displayName", "")
            entry["start"] = _when(item.start, zone, zone_name)
            entry["end"] = _when(item.end, zone, zone_name)
            items.append(entry)
        return {
            "scheduleId": schedule_id,
            "availabilityView": "".join(view),
            "scheduleItems": items,
            "workingHours": mailbox.working_hours_json(),
        }

    async def get_schedule(request: Request) -> Response:
        user = request.path_params["user"]
        async with mailbox_access(request, state, user, need="readbasic") as access:
            # Action parameters are matched case-insensitively (msgraph-sdk sends "Schedules").
            raw = await read_json(request)
            canonical = {k.lower(): k for k in _PARAMETERS}
            body = {canonical.get(k.lower(), k): v for k, v in raw.items()}
            schedules = body.get("schedules")
            if (
                not isinstance(schedules, list)
                or not schedules
                or not all(isinstance(s, str) for s in schedules)
            ):
                raise bad_request(
                    "The 'schedules' parameter must be a non-empty list of SMTP addresses.",
                    "ErrorInvalidParameter",
                )
            if len(schedules) > config.schedule_max_schedules:
                raise bad_request(
                    f"The number of schedules exceeds the allowed size = "
                    f"{config.schedule_max_schedules}.",
                    "ErrorInvalidParameter",
                )
            start = _instant(body, "startTime")
            end = _instant(body, "endTime")
            if end <= start:
                raise bad_request(
                    "The end time must be after the start time.", "ErrorInvalidTimeInterval"
                )
            # Graph's limit is a window shorter than 62 days: 62 days exactly is too long.
            if end - start >= dt.timedelta(days=config.schedule_max_window_days):
                actual = math.ceil((end - start) / dt.timedelta(days=1))
                raise bad_request(
                    "The requested time duration specified for FreeBusyViewOptions.TimeWindow "
                    f"is too long. The allowed limit = {config.schedule_max_window_days} days; "
                    f"the actual limit = {actual} days.",
                    "ErrorTimeIntervalTooBig",
                )
            interval = body.get("availabilityViewInterval", 30)
            if (
                not isinstance(interval, int)
                or isinstance(interval, bool)
                or not 5 <= interval <= 1440
            ):
                raise bad_request(
                    "The 'availabilityViewInterval' must be an integer from 5 to 1440.",
                    "ErrorInvalidParameter",
                )
            prefer = parse_prefer(request)
            zone_name = prefer.zone_name or "UTC"
            zone = find_zone(zone_name) or UTC
            value = [
                one_schedule(access.principal, s, start, end, interval, zone, zone_name)
                for s in schedules
            ]
            return JSONResponse(
                {
                    "@odata.context": f"{graph_root(request)}/$metadata#Collection("
                    "microsoft.graph.scheduleInformation)",
                    "value": value,
                },
                headers=prefer.applied(),
            )

    return [
        Route("/v1.0/users/{user}/calendar/getSchedule", get_schedule, methods=["POST"]),
    ]
