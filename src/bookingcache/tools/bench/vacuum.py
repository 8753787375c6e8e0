"""A stand-in for autovacuum, for the benchmarks that run a cluster on a PostgreSQL server of
the caller's (``bench soak``, ``bench scale``): on a server that runs without autovacuum (its
default is on), the rows every refresh deletes and updates (the jobs, the calendars' sync
state) would pile up as dead rows that every claim scans, and the benchmark would measure a
server no operator runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bookingcache.store.sql.engine import autovacuum_on, vacuum

# About autovacuum's own pace: it wakes every minute, and takes a table once a fifth is dead.
VACUUM_EVERY_S = 30.0


@dataclass
class VacuumStandIn:
    """``VACUUM (ANALYZE)`` of the benchmark's database every ``VACUUM_EVERY_S``, in place of
    the autovacuum the server does not run; how long each took."""

    database_url: str
    took_s: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), VACUUM_EVERY_S)
            if stop.is_set():
                return
            started = time.perf_counter()
            await vacuum(self.database_url)
            self.took_s.append(time.perf_counter() - started)

    def report(self) -> dict[str, Any]:
        return {
            "every_s": VACUUM_EVERY_S,
            "runs": len(self.took_s),
            "max_s": round(max(self.took_s), 3) if self.took_s else None,
        }

    @classmethod
    async def wanted(cls, database_url: str) -> VacuumStandIn | None:
        """One for the database at ``database_url`` if its server runs no autovacuum."""
        return None if await autovacuum_on(database_url) else cls(database_url)


@contextlib.asynccontextmanager
async def vacuuming(database_url: str) -> AsyncIterator[VacuumStandIn | None]:
    """A ``VacuumStandIn`` at work for as long as the block runs, where the server at
    ``database_url`` needs one (``None`` where it runs its own autovacuum)."""
    stand_in = await VacuumStandIn.wanted(database_url)
    if stand_in is None:
        yield None
        return
    stop = asyncio.Event()
    task = asyncio.create_task(stand_in.run(stop))
    try:
        yield stand_in
    finally:
        stop.set()
        await task
