"""A stand-in for autovacuum, for the benchmarks that run a cluster on a PostgreSQL server of
the caller's (``bench soak``, ``bench scale``): on a server that runs without autovacuum (its
default is on), the rows every refresh deletes and updates (the jobs, the calendars' sync
state) would pile up as dead rows that every claim scans, and the benchmark would measure a
server no operator runs.

The stand-in does what autovacuum would, with the server's own settings: one visit to the
database every ``autovacuum_naptime``, taking only the tables past their thresholds, at
autovacuum's cost-based pace (``pgserver.autovacuum_visit``). A manual ``VACUUM`` of the whole
database at full speed would take a core from the cluster for seconds at a time, which
autovacuum does not."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bookingcache.store.sql.pgserver import autovacuum_on, autovacuum_pace, autovacuum_visit


@dataclass
class VacuumStandIn:
    """Autovacuum's visits to the benchmark's database, every ``every_s`` (the server's
    naptime), in place of the autovacuum the server does not run; what each did and how long
    it took."""

    database_url: str
    every_s: float
    took_s: list[float] = field(default_factory=list)
    vacuumed: int = 0
    analyzed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
            if stop.is_set():
                return
            started = time.perf_counter()
            visit = await autovacuum_visit(self.database_url)
            self.took_s.append(time.perf_counter() - started)
            self.vacuumed += len(visit.vacuumed)
            self.analyzed += len(visit.analyzed)

    def report(self) -> dict[str, Any]:
        return {
            "every_s": self.every_s,
            "runs": len(self.took_s),
            "tables_vacuumed": self.vacuumed,
            "tables_analyzed": self.analyzed,
            "max_s": round(max(self.took_s), 3) if self.took_s else None,
        }

    @classmethod
    async def wanted(cls, database_url: str) -> VacuumStandIn | None:
        """One for the database at ``database_url`` if its server runs no autovacuum."""
        if await autovacuum_on(database_url):
            return None
        pace = await autovacuum_pace(database_url)
        return cls(database_url, every_s=pace.naptime_s)


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
