"""Exchange-looking item ids that the emulator can decode again.

A stored item's id is ``AAMkAG`` + base64url(kind 0 + 16 random bytes). An occurrence of a series
has no stored item: its id appends the occurrence's original start (UTC epoch seconds), so any
client can hand an occurrence id back (GET, PATCH, DELETE) and the emulator finds the series.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import struct

PREFIX = "AAMkAG"
_ITEM = 0
_OCCURRENCE = 1


def new_item_id(rng: random.Random) -> str:
    return PREFIX + base64.urlsafe_b64encode(bytes([_ITEM]) + rng.randbytes(16)).decode()


def occurrence_id(master_id: str, original_start: dt.datetime) -> str:
    raw = _raw(master_id)
    if raw is None:
        raise ValueError(f"not an item id: {master_id}")
    stamp = struct.pack(">q", int(original_start.timestamp()))
    return PREFIX + base64.urlsafe_b64encode(bytes([_OCCURRENCE]) + raw + stamp).decode()


def _raw(item_id: str) -> bytes | None:
    decoded = _decode(item_id)
    if decoded is None or decoded[0] != _ITEM or len(decoded) != 17:
        return None
    return decoded[1:]


def _decode(value: str) -> bytes | None:
    if not value.startswith(PREFIX):
        return None
    try:
        return base64.urlsafe_b64decode(value[len(PREFIX) :].encode())
    except ValueError:
        return None


def parse_occurrence_id(value: str) -> tuple[str, dt.datetime] | None:
    """(series master id, original start) for an occurrence id, else None."""
    decoded = _decode(value)
    if decoded is None or len(decoded) != 25 or decoded[0] != _OCCURRENCE:
        return None
    master = PREFIX + base64.urlsafe_b64encode(bytes([_ITEM]) + decoded[1:17]).decode()
    (seconds,) = struct.unpack(">q", decoded[17:])
    return master, dt.datetime.fromtimestamp(seconds, dt.UTC)


def new_change_key(rng: random.Random) -> str:
    return base64.b64encode(b"\x0f\x00\x00\x00\x16\x00" + rng.randbytes(18)).decode()
