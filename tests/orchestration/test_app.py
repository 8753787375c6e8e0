"""The orchestration inside the service app: started and stopped by the app's lifespan."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from bookingcache.api.app import create_app
from bookingcache.orchestration.orchestrator import Orchestrator
from bookingcache.orchestration.settings import OrchestrationSettings
from bookingcache.settings import Settings

ADMIN = "orchestration-app-test-admin-token-012345"


async def test_the_lifespan_runs_it_and_can_run_twice(tmp_path: Path) -> None:
    settings = Settings(environment="development", data_dir=tmp_path, admin_token=SecretStr(ADMIN))
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    for _ in range(2):
        async with app.router.lifespan_context(app):
            assert isinstance(app.state.orchestrator, Orchestrator)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer = await client.get("/v1/subscriptions", headers=headers)
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
        assert app.state.orchestrator is None


async def test_it_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(environment="development", data_dir=tmp_path, admin_token=SecretStr(ADMIN))
    app = create_app(settings)
    app.state.orchestration_settings = OrchestrationSettings(enabled=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get(
                "/v1/subscriptions", headers={"Authorization": f"Bearer {ADMIN}"}
            )
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
