"""What operators watch besides the API: a worker's operations endpoints (``bookingcache worker
--metrics-port``), the database probe behind ``bookingcache_database_up``, and the commands a
deployment runs (``bookingcache migrate``, ``bookingcache healthcheck``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bookingcache.api.operations import operations_app
from bookingcache.bootstrap import Container, open_worker, service_app
from bookingcache.cli import main
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from bookingcache.store.sql.store import SqlStore, open_store
from bookingcache.tools.processes import free_port
from tests.support.databases import SECRETS_KEY, sealing_box
from tests.support.problems import assert_problem
from tests.support.servers import bound_socket, serve_in_thread
from tests.support.waiting import until


def _value(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _set_revision(revision: str) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})

    return work


async def _revision(store: SqlStore) -> str:
    async with store.read() as connection:
        return str(
            (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        )


@pytest.fixture
async def worker(settings: Settings, clock: FixedClock) -> AsyncIterator[Container]:
    container = await open_worker(settings, clock=clock)
    try:
        yield container
    finally:
        await container.close()


@pytest.fixture
async def operations(worker: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=operations_app(worker))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client


async def test_a_worker_answers_health_readiness_and_metrics(
    operations: httpx.AsyncClient, worker: Container
) -> None:
    assert (await operations.get("/healthz")).json() == {"status": "ok"}
    assert (await operations.get("/readyz")).json()["status"] == "ready"

    async def database_up() -> bool:
        return _value((await operations.get("/metrics")).text, "bookingcache_database_up") == 1

    await until(database_up, what="the probe's first check")

    async def holds_its_duties() -> bool:
        ready = (await operations.get("/readyz")).json()
        return [duty["duty"] for duty in ready["duties"]] == ["retention", "sweep"]

    # Alone on its database, the worker holds the duties a worker runs, and says so.
    await until(holds_its_duties, what="the worker's duties")
    ready = (await operations.get("/readyz")).json()
    assert ready["candidate_duties"] == ["retention", "sweep"]
    assert ready["incarnation"].startswith(ready["instance_id"] + "@")
    assert ready["claims"] == 0
    assert all(duty["token"] >= 1 for duty in ready["duties"])
    metrics = (await operations.get("/metrics")).text
    held = {
        sample.labels["duty"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "bookingcache_duty_held"
    }
    assert held == {"retention": 1.0, "sweep": 1.0}
    assert _value(metrics, "bookingcache_sync_queue_depth") == 0
    assert _value(metrics, "bookingcache_sync_queue_oldest_due_seconds") == 0
    assert_problem(await operations.get("/v1/tenants"), 404)  # no API on this port


async def test_a_worker_whose_schema_is_behind_is_not_ready(
    operations: httpx.AsyncClient, worker: Container, store: SqlStore
) -> None:
    head = await _revision(store)
    await store.transaction(_set_revision("0005"))
    try:
        body = assert_problem(await operations.get("/readyz"), 503)
        assert "migration" in body["detail"]
        assert (await operations.get("/healthz")).status_code == 200
        assert not await worker.database_probe.check()
        assert _value((await operations.get("/metrics")).text, "bookingcache_database_up") == 0
    finally:
        await store.transaction(_set_revision(head))
    assert await worker.database_probe.check()


async def test_the_api_process_has_the_database_probe_too(settings: Settings) -> None:
    app = service_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:

            async def database_up() -> bool:
                metrics = (await client.get("/metrics")).text
                return _value(metrics, "bookingcache_database_up") == 1

            await until(database_up, what="the probe's first check")


@pytest.mark.usefixtures("restore_logging")
async def test_migrate_brings_a_new_database_to_the_newest_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKINGCACHE_DATABASE_WAIT_S", "0")
    monkeypatch.setenv("BOOKINGCACHE_SECRETS_KEY", SECRETS_KEY)
    data_dir = tmp_path / "data"
    exit_code = await asyncio.to_thread(main, ["migrate", "--data-dir", str(data_dir)])
    assert exit_code == 0
    assert "newest schema" in capsys.readouterr().out
    url = f"sqlite:///{data_dir / 'bookingcache.db'}"
    store = await open_store(url, box=sealing_box(), migrate=False)
    await store.close()  # open_store without migrating refuses a schema that is behind


def test_healthcheck_passes_only_on_a_ready_answer(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_in_thread(service_app(settings)) as url:
        port = url.rsplit(":", 1)[1]
        assert main(["healthcheck", "--port", port]) == 0
        assert main(["healthcheck", "--port", port, "--path", "/nowhere"]) == 1
        assert "404" in capsys.readouterr().err
    assert main(["healthcheck", "--port", str(free_port())]) == 1
    assert "ConnectError" in capsys.readouterr().err


async def test_healthcheck_asks_a_workers_metrics_port(
    worker: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    # On this loop, as the worker serves it: /readyz uses the worker's store.
    sock = bound_socket()
    server = uvicorn.Server(
        uvicorn.Config(operations_app(worker), log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started, what="the metrics port listens")
        port = str(sock.getsockname()[1])
        assert await asyncio.to_thread(main, ["healthcheck", "--port", port]) == 0
        assert await asyncio.to_thread(main, ["healthcheck", "--port", port, "--host", "::1"]) == 1
    finally:
        server.should_exit = True
        await serving
        sock.close()
    assert "[::1]" in capsys.readouterr().err
