"""What a tenant's read token shows of a failing connector: the class of the failure and its
HTTP status, never what the connector sent (its URL could point anywhere: an internal service,
a metadata endpoint). A connector on a real loopback port, the service in development mode."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookingcache.bootstrap import service_app
from bookingcache.errors import ERROR_CLASSES
from bookingcache.settings import Settings
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.servers import serve_in_thread
from tests.support.waiting import until

from .world import FAST, FAST_SYNC

MARKER = "MARKER-aws-secret-key-AKIAEXAMPLE"
MAILBOX = "room-1@contoso.example"


def _connector(status: int, body: str) -> Starlette:
    async def answer(request: Request) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/subscriptions", answer, methods=["PUT"]),
            Route("/v1/calendars/{mailbox}/events", answer),
        ]
    )


@contextlib.asynccontextmanager
async def _service(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        environment="development",
        data_dir=tmp_path / "service",
        admin_token=SecretStr(ADMIN_TOKEN),
        run_worker=True,
        orchestration=FAST,
        sync=FAST_SYNC,
    )
    app = service_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (500, f'{{"error": "{MARKER}"}}', "connector-error (HTTP 500)"),
        (403, MARKER, "connector-refused-auth (HTTP 403)"),
        (200, f'{{"subscriptions": [{{"mailbox": "{MARKER}"}}]}}', "connector-bad-answer"),
    ],
)
async def test_the_read_token_sees_the_class_of_a_connector_failure_never_its_reply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int, body: str, shown: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(_connector(status, body)) as connector_url:
        async with _service(tmp_path) as service:
            created = await service.post(
                "/v1/tenants",
                json={"id": "contoso", "name": "Contoso", "connector_url": connector_url},
                headers=ADMIN,
            )
            assert created.status_code == 201, created.text
            reader = {"Authorization": f"Bearer {created.json()['secrets']['read_token']}"}
            linked = await service.put(
                "/v1/tenants/contoso/rooms/r1",
                json={"mailbox": MAILBOX, "name": "Room 1"},
                headers=ADMIN,
            )
            assert linked.status_code in (200, 201), linked.text

            async def failing() -> bool:
                answer = await service.get("/v1/tenants/contoso/subscriptions", headers=reader)
                [calendar] = answer.json()["calendars"]
                return calendar["state"] == "failing" and calendar["last_error"] is not None

            await until(failing, timeout_s=20, what="the calendar reported failing")
            seen = await service.get("/v1/tenants/contoso/subscriptions", headers=reader)
            assert seen.json()["calendars"][0]["last_error"] == shown
            assert MARKER not in seen.text
            operator = await service.get("/v1/subscriptions", headers=ADMIN)
            assert MARKER not in operator.text
            converged = await service.post(
                "/v1/tenants/contoso/subscriptions:converge", headers=ADMIN
            )
            assert converged.json()["error"] == shown
            assert MARKER not in converged.text
    assert MARKER not in caplog.text  # the log has the class and status, not the reply


async def test_the_openapi_description_lists_every_class(tmp_path: Path) -> None:
    async with _service(tmp_path) as service:
        document = (await service.get("/openapi.json")).json()
    field = document["components"]["schemas"]["CalendarHealthOut"]["properties"]["last_error"]
    for name in ERROR_CLASSES:
        assert f"`{name}`" in field["description"]
