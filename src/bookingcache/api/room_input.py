"""Validation of room links, shared by the single-room endpoint and the bulk import."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bookingcache.api.numbers import WholeNumber
from bookingcache.api.tenants import canonical_time_zone, check_name, check_text
from bookingcache.domain.tenancy import Room

PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
ROOM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_MAILBOX = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)

# How deeply positions nest in each GeoJSON geometry type (RFC 7946, section 3.1).
_POSITION_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}

Label = Annotated[str, Field(max_length=100)]
MAX_CAPACITY = 100_000
# A room's outline is drawn by every map client that lists its floor: bounded, so that one
# room cannot make a floor's listing heavy.
MAX_GEOMETRY_POSITIONS = 5_000
MAX_GEOMETRY_BYTES = 256 * 1024


def check_mailbox(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _MAILBOX.match(value):
        raise ValueError("mailbox must be an email address or UPN such as room.1@contoso.com")
    return value.lower()


def _check_position(value: Any, where: str) -> None:
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise ValueError(f"{where}: a position is a list of 2 or 3 numbers")
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"{where}: a position holds numbers only")
        if not math.isfinite(number):
            raise ValueError(f"{where}: coordinates must be finite")


def _check_coordinates(value: Any, depth: int, where: str) -> int:
    """Check the nesting and the positions; returns how many positions there are."""
    if depth == 0:
        _check_position(value, where)
        return 1
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    count = 0
    for index, item in enumerate(value):
        count += _check_coordinates(item, depth - 1, f"{where}[{index}]")
        if count > MAX_GEOMETRY_POSITIONS:
            raise ValueError(f"a geometry holds at most {MAX_GEOMETRY_POSITIONS} positions")
    return count


def _check_shape(kind: str, coordinates: list[Any]) -> None:
    if kind == "LineString" and len(coordinates) < 2:
        raise ValueError("a LineString needs at least 2 positions")
    rings: list[Any] = []
    if kind == "Polygon":
        rings = coordinates
    elif kind == "MultiPolygon":
        rings = [ring for polygon in coordinates for ring in polygon]
    if kind in ("Polygon", "MultiPolygon") and not rings:
        raise ValueError(f"a {kind} needs at least one ring")
    for ring in rings:
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise ValueError(
                "a polygon ring needs at least 4 positions, the last equal to the first"
            )


def check_geometry(value: Any) -> dict[str, Any]:
    """A GeoJSON geometry object (RFC 7946): its type, the nesting and numbers of its
    positions, closed polygon rings, and a bounded size (positions and encoded bytes)."""
    _check_member(value, positions=0)
    try:
        _refuse_nul(value)
    except RecursionError:
        raise ValueError("geometry nests too deeply") from None
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise ValueError("geometry must be plain JSON") from None
    if size > MAX_GEOMETRY_BYTES:
        raise ValueError(f"a geometry is at most {MAX_GEOMETRY_BYTES} bytes as JSON")
    return value  # type: ignore[no-any-return]


def _check_member(value: Any, *, positions: int, nested: bool = False) -> int:
    """Check one geometry (of a collection when ``nested``); returns the positions counted so
    far."""
    if not isinstance(value, dict):
        raise ValueError("geometry must be a GeoJSON geometry object")
    kind = value.get("type")
    if kind == "GeometryCollection" and not nested:
        members = value.get("geometries")
        if not isinstance(members, list):
            raise ValueError("a GeometryCollection needs a 'geometries' list")
        for member in members:
            positions = _check_member(member, positions=positions, nested=True)
        return positions
    if kind not in _POSITION_DEPTH:
        allowed = ", ".join(_POSITION_DEPTH)
        raise ValueError(f"geometry type must be one of {allowed} or GeometryCollection")
    coordinates = value.get("coordinates")
    positions += _check_coordinates(coordinates, _POSITION_DEPTH[kind], "coordinates")
    if positions > MAX_GEOMETRY_POSITIONS:
        raise ValueError(f"a geometry holds at most {MAX_GEOMETRY_POSITIONS} positions")
    if isinstance(coordinates, list):
        _check_shape(kind, coordinates)
    return positions


def _refuse_nul(value: Any) -> None:
    """Foreign members may hold any JSON, but not NUL, which PostgreSQL cannot store."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("geometry must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key)
            _refuse_nul(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul(item)


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


class RoomLink(BaseModel):
    """What a map editor says about one room."""

    model_config = ConfigDict(extra="forbid")

    mailbox: str = Field(
        max_length=254, description="The room mailbox (email/UPN)", examples=["room.1@contoso.com"]
    )
    name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    building: Label | None = Field(default=None, examples=["HQ"])
    floor: Label | None = Field(default=None, examples=["3"])
    time_zone: str | None = Field(
        default=None, max_length=128, description="IANA or Windows name; default: the tenant's"
    )
    geometry: dict[str, Any] | None = Field(
        default=None,
        description="The room's outline in the map's coordinates: a GeoJSON geometry, "
        "usually a Polygon with closed rings (Point, MultiPolygon, ... are accepted too); "
        f"at most {MAX_GEOMETRY_POSITIONS} positions and {MAX_GEOMETRY_BYTES // 1024} KiB",
    )
    capacity: WholeNumber | None = Field(
        default=None, ge=0, le=MAX_CAPACITY, description="How many people it seats", examples=[8]
    )

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        return check_mailbox(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("building", "floor", "time_zone", "capacity", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("building", "floor")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else canonical_time_zone(value)

    @field_validator("geometry")
    @classmethod
    def _geometry(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_geometry(value)

    def to_room(self, tenant_id: str, room_id: str) -> Room:
        return Room(
            tenant_id=tenant_id,
            room_id=room_id,
            mailbox=self.mailbox,
            name=self.name,
            building=self.building,
            floor=self.floor,
            geometry=self.geometry,
            time_zone=self.time_zone,
            capacity=self.capacity,
        )


class ImportedRoom(RoomLink):
    room_id: str = Field(pattern=ROOM_ID_PATTERN, description="The room's id in the map")


class RoomOut(BaseModel):
    room_id: str
    mailbox: str
    name: str
    building: str | None
    floor: str | None
    time_zone: str | None
    geometry: dict[str, Any] | None
    capacity: int | None

    @classmethod
    def of(cls, room: Room) -> RoomOut:
        return cls(
            room_id=room.room_id,
            mailbox=room.mailbox,
            name=room.name,
            building=room.building,
            floor=room.floor,
            time_zone=room.time_zone,
            geometry=room.geometry,
            capacity=room.capacity,
        )
