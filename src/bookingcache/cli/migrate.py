"""``bookingcache migrate``: bring the database to the newest schema and exit.

Every ``serve`` and ``worker`` migrates at start as well; a deployment runs this once first
(the compose file's ``migrate`` step), so that an upgrade's migrations run in one place before
any process of the new version starts, and a failed migration stops the rollout there."""

from __future__ import annotations

import asyncio

from bookingcache.bootstrap import open_store_when_ready, settings_from_environment
from bookingcache.clock import SystemClock
from bookingcache.settings import Settings
from bookingcache.telemetry.logs import configure_logging


def run_migrate(*, data_dir: str | None = None, database_url: str | None = None) -> int:
    settings = settings_from_environment(data_dir=data_dir, database_url=database_url)
    configure_logging(settings)
    return asyncio.run(_migrate(settings))


async def _migrate(settings: Settings) -> int:
    store = await open_store_when_ready(settings, clock=SystemClock())
    try:
        print(f"bookingcache database ({store.dialect}) is at the newest schema", flush=True)
    finally:
        await store.close()
    return 0
