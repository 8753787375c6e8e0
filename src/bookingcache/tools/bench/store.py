"""Store benchmark: ``python -m bookingcache.tools.bench.store [--rooms N] [--database-url URL]``.

Seeds a tenant with N rooms (20 events per room per day over 7 days) through ``replace_window``,
then measures the write path (a first replacement, a no-op replacement and a one-event change of a
140-event window) and the bulk read availability is built from (one day of every room's events).
Without ``--database-url`` it runs on a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import Room, Tenant, TenantSecrets
from bookingcache.settings import new_secrets_key
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.tools.bench.http import report

TENANT = "store-bench"
DAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)


def _week_of_events(shift_minutes: int = 0) -> list[BasicEvent]:
    return [
        BasicEvent(
            f"d{day}-{slot}",
            DAY + dt.timedelta(days=day, minutes=30 * slot + shift_minutes),
            DAY + dt.timedelta(days=day, minutes=30 * slot + 25 + shift_minutes),
            title=f"Meeting {slot}",
        )
        for day in range(7)
        for slot in range(20)
    ]


def _ms(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p99_ms": round(p99 * 1000, 2)}


async def _replace(store: SqlStore, mailbox: str, events: list[BasicEvent]) -> float:
    started = time.perf_counter()
    await store.replace_window(
        TENANT, mailbox, window_start=DAY, window_end=DAY + WEEK, events=events, synced_at=DAY
    )
    return time.perf_counter() - started


async def run(url: str, rooms: int) -> dict[str, object]:
    store = await open_store(url, box=SecretBox([new_secrets_key()]))
    try:
        await store.create_tenant(
            Tenant(id=TENANT, name="Store benchmark"), TenantSecrets("whsec_YmVuY2g=", "bench.t")
        )
        mailboxes = [f"room{n}@bench.test" for n in range(rooms)]
        await store.import_rooms(
            TENANT,
            [Room(TENANT, f"r{n}", mailbox, f"Room {n}") for n, mailbox in enumerate(mailboxes)],
        )
        week = _week_of_events()
        first = [await _replace(store, mailbox, week) for mailbox in mailboxes]
        sample = mailboxes[: min(rooms, 200)]
        unchanged = [await _replace(store, mailbox, week) for mailbox in sample]
        one_moved = [*week[:-1], _week_of_events(shift_minutes=5)[-1]]
        changed = [await _replace(store, mailbox, one_moved) for mailbox in sample]
        reads = []
        loaded = 0
        for _ in range(5):
            started = time.perf_counter()
            found = await store.events_in_window(
                TENANT, mailboxes, start=DAY, end=DAY + dt.timedelta(days=1)
            )
            reads.append(time.perf_counter() - started)
            loaded = sum(len(events) for events in found.values())
        await store.delete_tenant(TENANT)
        return {
            "engine": store.dialect,
            "rooms": rooms,
            "events_per_window": len(week),
            "replace_first": _ms(first),
            "replace_unchanged": _ms(unchanged),
            "replace_one_change": _ms(changed),
            "read_day_events": loaded,
            "read_day": _ms(reads),
        }
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bookingcache.tools.bench.store")
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{Path(directory) / 'bench.db'}"
        result = asyncio.run(run(url, args.rooms))
    report(result, as_json=args.json)


if __name__ == "__main__":
    main()
