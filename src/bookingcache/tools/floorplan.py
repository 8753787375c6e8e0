"""Plausible floor plans for the demo's rooms, in map coordinates (GeoJSON, WGS 84 longitude
and latitude): each floor is a corridor with rooms on both sides, each room as wide as its
seats need. Every building stands at its own place; its floors lie on top of each other."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

# Where the first building stands; the next ones a few hundred metres east.
_ORIGIN = (9.9937, 53.5413)
_NEXT_BUILDING_LON = 0.004
_METRES_PER_DEGREE_LAT = 110_574.0
_CORRIDOR_M = 2.4
_DEPTH_M = 6.0


def _width_m(capacity: int | None) -> float:
    return 4.0 + 0.45 * (capacity if capacity is not None else 6)


def floor_plans(rooms: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Room id -> a GeoJSON Polygon, for rooms given as ``{"building", "floor", "capacity"}``
    (rooms without a building or floor get none)."""
    floors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for room_id, room in sorted(rooms.items()):
        if room.get("building") and room.get("floor") is not None:
            floors[(str(room["building"]), str(room["floor"]))].append(room_id)
    buildings = sorted({building for building, _ in floors})
    plans: dict[str, dict[str, Any]] = {}
    for (building, _floor), ids in floors.items():
        lon0 = _ORIGIN[0] + _NEXT_BUILDING_LON * buildings.index(building)
        lat0 = _ORIGIN[1]
        metres_per_degree_lon = _METRES_PER_DEGREE_LAT * math.cos(math.radians(lat0))
        cursor = {"north": 0.0, "south": 0.0}
        for index, room_id in enumerate(ids):
            side = "north" if index % 2 == 0 else "south"
            width = _width_m(rooms[room_id].get("capacity"))
            x0 = cursor[side]
            cursor[side] = x0 + width
            y0, y1 = (
                (_CORRIDOR_M / 2, _CORRIDOR_M / 2 + _DEPTH_M)
                if side == "north"
                else (-_CORRIDOR_M / 2 - _DEPTH_M, -_CORRIDOR_M / 2)
            )
            corners = [(x0, y0), (x0 + width, y0), (x0 + width, y1), (x0, y1)]
            ring = [
                [
                    round(lon0 + x / metres_per_degree_lon, 7),
                    round(lat0 + y / _METRES_PER_DEGREE_LAT, 7),
                ]
                for x, y in corners
            ]
            plans[room_id] = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    return plans
