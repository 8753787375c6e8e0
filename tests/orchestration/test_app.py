"""The orchestration inside the service app: started and stopped by the app's lifespan."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from bookingcache.bootstrap import service_app
from bookingcache.orchestration.orchestrator import Orchestrator
from bookingcache.settings import OrchestrationSettings, Settings
from tests.support.auth import ADMIN, ADMIN_TOKEN


async def test_the_lifespan_runs_it_and_can_run_twice(tmp_path: Path) -> None:
    settings = Settings(
        environment="development", data_dir=tmp_path, admin_token=SecretStr(ADMIN_TOKEN)
    )
    app = service_app(settings)
    for _ in range(2):
        async with app.router.lifespan_context(app):
            assert isinstance(app.state.services.orchestrator, Orchestrator)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer = await client.get("/v1/subscriptions", headers=ADMIN)
                assert answer.status_code == 200
                assert answer.json() == {
                    "counts": {
                        "healthy": 0,
                        "expiring": 0,
                        "failing": 0,
                        "silent": 0,
                        "unsubscribed": 0,
                    },
                    "calendars": [],
                }
                metrics = (await client.get("/metrics")).text
                assert 'bookingcache_subscription_calendars{state="healthy"} 0.0' in metrics
        assert app.state.services is None


async def test_it_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(
        environment="development",
        data_dir=tmp_path,
        admin_token=SecretStr(ADMIN_TOKEN),
        orchestration=OrchestrationSettings(enabled=False),
    )
    app = service_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/v1/subscriptions", headers=ADMIN)
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
