"""Parsing a room import (CSV or JSON) into validated rooms, or into the list of every bad row.

CSV rows are numbered by line, the header being line 1; JSON rows by their position in
``rooms``, the first being 1.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from bookingcache.api.problems import FieldError
from bookingcache.api.room_input import ImportedRoom

MAX_IMPORT_ROOMS = 50_000
MAX_REPORTED_ERRORS = 1_000
REQUIRED_COLUMNS = ("room_id", "mailbox", "name")
CSV_COLUMNS = (*REQUIRED_COLUMNS, "building", "floor", "time_zone", "geometry", "capacity")


class ImportRejected(Exception):
    def __init__(self, detail: str, field_errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field_errors = field_errors


def _row_errors(row: int, exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(
            row=row,
            field=".".join(str(part) for part in error["loc"]) or "row",
            message=error["msg"],
            type=error["type"],
        )
        for error in exc.errors(include_url=False)
    ]


def validate_rows(rows: Iterator[tuple[int, Mapping[str, Any] | FieldError]]) -> list[ImportedRoom]:
    """Validate every row; raise ``ImportRejected`` naming all bad rows if any is bad."""
    rooms: list[ImportedRoom] = []
    errors: list[FieldError] = []
    first_row_of: dict[str, int] = {}
    for number, raw in rows:
        if isinstance(raw, FieldError):
            errors.append(raw)
            continue
        try:
            room = ImportedRoom.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_row_errors(number, exc))
            continue
        if room.room_id in first_row_of:
            errors.append(
                FieldError(
                    row=number,
                    field="room_id",
                    message=f"room_id {room.room_id!r} is also on row {first_row_of[room.room_id]}",
                    type="duplicate",
                )
            )
            continue
        first_row_of[room.room_id] = number
        rooms.append(room)
    if len(rooms) + len({e.row for e in errors}) > MAX_IMPORT_ROOMS:
        raise ImportRejected(f"an import holds at most {MAX_IMPORT_ROOMS} rooms", [])
    if errors:
        bad_rows = sorted({e.row for e in errors if e.row is not None})
        shown = errors[:MAX_REPORTED_ERRORS]
        more = (
            f" (first {len(shown)} of {len(errors)} errors listed)"
            if len(errors) > len(shown)
            else ""
        )
        raise ImportRejected(
            f"{len(bad_rows)} bad row(s), nothing imported: rows "
            + ", ".join(str(r) for r in bad_rows[:50])
            + (" ..." if len(bad_rows) > 50 else "")
            + more,
            shown,
        )
    if not rooms:
        raise ImportRejected("the import holds no rooms", [])
    return rooms


def parse_csv(data: bytes) -> list[ImportedRoom]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRejected(f"the CSV is not UTF-8 (byte {exc.start})", []) from None
    return validate_rows(_csv_rows(text))


def _csv_rows(text: str) -> Iterator[tuple[int, Mapping[str, Any] | FieldError]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield 1, FieldError(row=1, field="header", message=f"malformed CSV: {exc}", type="csv")
        return
    if not header:
        yield 1, FieldError(row=1, field="header", message="the header row is missing", type="csv")
        return
    columns = [name.strip().lower() for name in header]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if unknown or missing or repeated:
        problems = []
        if missing:
            problems.append("missing column(s) " + ", ".join(missing))
        if unknown:
            problems.append("unknown column(s) " + ", ".join(unknown))
        if repeated:
            problems.append("repeated column(s) " + ", ".join(repeated))
        message = "; ".join(problems) + " (columns: " + ",".join(CSV_COLUMNS) + ")"
        yield 1, FieldError(row=1, field="header", message=message, type="csv")
        return
    line = reader.line_num
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield (
                start,
                FieldError(row=start, field="row", message=f"malformed CSV: {exc}", type="csv"),
            )
            return
        line = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(columns):
            yield (
                start,
                FieldError(
                    row=start,
                    field="row",
                    message=f"expected {len(columns)} fields, found {len(values)}",
                    type="csv",
                ),
            )
            continue
        yield start, _csv_record(start, dict(zip(columns, values, strict=True)))


def _csv_record(row: int, record: dict[str, Any]) -> Mapping[str, Any] | FieldError:
    geometry = (record.get("geometry") or "").strip()
    if not geometry:
        record.pop("geometry", None)
        return record
    try:
        record["geometry"] = json.loads(geometry)
    except ValueError:
        return FieldError(
            row=row, field="geometry", message="geometry is not valid JSON", type="json"
        )
    return record


def parse_json(data: bytes) -> list[ImportedRoom]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ImportRejected("the body is not valid JSON", []) from None
    if not isinstance(document, dict) or not isinstance(document.get("rooms"), list):
        raise ImportRejected('the body must be an object {"rooms": [...]}', [])
    extra = sorted(set(document) - {"rooms"})
    if extra:
        raise ImportRejected("unknown field(s) " + ", ".join(extra), [])
    return validate_rows(_json_rows(document["rooms"]))


def _json_rows(items: list[Any]) -> Iterator[tuple[int, Mapping[str, Any] | FieldError]]:
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield number, item
        else:
            yield (
                number,
                FieldError(
                    row=number, field="row", message="each room must be an object", type="type"
                ),
            )
