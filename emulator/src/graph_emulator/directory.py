"""Users and room mailboxes of the emulated tenant, with the Exchange room settings
(``Set-CalendarProcessing``) that shape what a room's calendar shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from graph_emulator.errors import GraphError
from graph_emulator.timezones import windows_name

BookingMode = Literal["AutoAccept", "AutoUpdate"]


@dataclass
class WorkingHours:
    days_of_week: list[str] = field(
        default_factory=lambda: ["monday", "tuesday", "wednesday", "thursday", "friday"]
    )
    start_time: str = "08:00:00"
    end_time: str = "17:00:00"


@dataclass
class Mailbox:
    id: str
    upn: str
    display_name: str
    time_zone: str = "UTC"  # IANA key
    is_room: bool = False
    booking_mode: BookingMode = "AutoAccept"
    delete_subject: bool = True
    add_organizer_to_subject: bool = True
    remove_private_property: bool = True
    delete_comments: bool = True
    building: str | None = None
    floor: int | None = None
    floor_label: str | None = None
    capacity: int | None = None
    working_hours: WorkingHours = field(default_factory=WorkingHours)
    given_name: str | None = None
    surname: str | None = None
    job_title: str | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def user_json(self) -> dict[str, Any]:
        return {
            "businessPhones": [],
            "displayName": self.display_name,
            "givenName": self.given_name,
            "jobTitle": self.job_title,
            "mail": self.upn,
            "mobilePhone": None,
            "officeLocation": self.building,
            "preferredLanguage": None,
            "surname": self.surname,
            "userPrincipalName": self.upn,
            "id": self.id,
        }

    def room_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "emailAddress": self.upn,
            "displayName": self.display_name,
            "address": None,
            "geoCoordinates": None,
            "phone": None,
            "nickname": self.display_name,
            "label": None,
            "capacity": self.capacity,
            "building": self.building,
            "floorLabel": self.floor_label,
            "floorNumber": self.floor,
            "isWheelChairAccessible": False,
            "bookingType": "standard",
            "tags": [],
            "audioDeviceName": None,
            "videoDeviceName": None,
            "displayDeviceName": None,
        }

    def working_hours_json(self) -> dict[str, Any]:
        return {
            "daysOfWeek": list(self.working_hours.days_of_week),
            "startTime": f"{self.working_hours.start_time}.0000000",
            "endTime": f"{self.working_hours.end_time}.0000000",
            "timeZone": {"name": windows_name(self.time_zone)},
        }


def invalid_user(id_or_upn: str) -> GraphError:
    return GraphError(404, "ErrorInvalidUser", f"The requested user '{id_or_upn}' is invalid.")


class Directory:
    def __init__(self) -> None:
        self._by_id: dict[str, Mailbox] = {}
        self._by_upn: dict[str, Mailbox] = {}

    def add(self, mailbox: Mailbox) -> Mailbox:
        self._by_id[mailbox.id.lower()] = mailbox
        self._by_upn[mailbox.upn.lower()] = mailbox
        return mailbox

    def find(self, id_or_upn: str) -> Mailbox | None:
        key = id_or_upn.strip().lower()
        return self._by_id.get(key) or self._by_upn.get(key)

    def resolve(self, id_or_upn: str) -> Mailbox:
        """The mailbox for an object id or UPN; Graph's 404 ``ErrorInvalidUser`` otherwise."""
        mailbox = self.find(id_or_upn)
        if mailbox is None:
            raise invalid_user(id_or_upn)
        return mailbox

    def resolve_user(self, id_or_upn: str) -> Mailbox:
        """Like ``resolve`` but with the directory's error, as ``GET /users/{id}`` answers."""
        mailbox = self.find(id_or_upn)
        if mailbox is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{id_or_upn}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        return mailbox

    def all(self) -> list[Mailbox]:
        return list(self._by_id.values())

    def rooms(self) -> list[Mailbox]:
        return [m for m in self._by_id.values() if m.is_room]
