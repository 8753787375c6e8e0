"""The container images and the compose stack, as far as a machine without a Docker daemon can
run them (docs/operations.md, "What the image test covers").

Both images are built as their Dockerfiles say, outside any container: the build stages'
``COPY`` and ``RUN`` (wheels of the service or the connector and of every dependency, then a
fresh virtualenv installed from those wheels alone) into a directory standing for the image's
file system. Then every service of deploy/compose.yaml that is built from them runs in the order
its ``depends_on`` gives, with the image's ``ENTRYPOINT`` and the service's ``command`` (or the
image's ``CMD``), the image's ``ENV`` and the service's ``environment``, each health check
(the service's, else the image's ``HEALTHCHECK``) run as written until it passes within the
time it allows. Only the addresses differ: a fresh database on the local PostgreSQL stands for
the ``postgres`` service, and each process listens on a free loopback port. Then the stack
serves: a tenant made through one API process is read through the other, every process reports
its database up, and every one stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bookingcache.store.sql import pgserver
from bookingcache.tools.processes import free_port
from tests.deploy.recipes import (
    Build,
    Healthcheck,
    Image,
    Rootfs,
    compose_healthcheck,
    compose_variables,
    load_compose,
    parse_dockerfile,
    start_order,
)
from tests.support.databases import POSTGRES_ENV
from tests.support.secrets_scan import PLUGIN_NAME

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
# Polling a health check this often rather than at its interval keeps the test short; it still
# has to pass within the start period and retries the file allows.
POLL_S = 0.5


def _variables() -> dict[str, str]:
    """What deploy/.env holds for this run: fresh secrets, names of no real host."""
    return {
        "BOOKINGCACHE_VERSION": "test",
        "BOOKINGCACHE_DOMAIN": "bookingcache.example.com",
        "CONNECTOR_DOMAIN": "connector.example.com",
        "ACME_EMAIL": "ops@example.com",
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "BOOKINGCACHE_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "BOOKINGCACHE_SECRETS_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "BOOKINGCACHE_CORS_ORIGINS": "https://map.example.com",
        "BOOKINGCACHE_LOG_LEVEL": "INFO",
        "CONNECTOR_TENANT_ID": str(uuid.uuid4()),
        "CONNECTOR_CLIENT_ID": str(uuid.uuid4()),
        "CONNECTOR_CLIENT_SECRET": secrets.token_urlsafe(32),
        "CONNECTOR_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "CONNECTOR_SERVICE_TENANT": "contoso",
    }


def _base_env(home: Path, shims: Path) -> dict[str, str]:
    """A base image's environment: ``python`` is the interpreter (here: this one's base);
    pip reaches the registries as this machine's configuration says."""
    shims.mkdir(parents=True, exist_ok=True)
    python = shims / "python"
    if not python.exists():
        python.symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {"PATH": f"{shims}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env |= {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
    return env


def _pip_cache() -> Path:
    found = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Path(found) if found else Path.home() / ".cache" / "pip"


@dataclass
class Built:
    image: Image
    rootfs: Rootfs
    base_env: dict[str, str]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Built]:
    """Every image the compose file builds, built once for the module (side by side)."""
    compose = load_compose(COMPOSE, _variables())
    builds: dict[Path, Build] = {}
    for spec in compose["services"].values():
        if "build" not in spec:
            continue
        context = (COMPOSE.parent / spec["build"]["context"]).resolve()
        dockerfile = (context / spec["build"]["dockerfile"]).resolve()
        if dockerfile in builds:
            continue
        root = tmp_path_factory.mktemp(dockerfile.stem)
        builds[dockerfile] = Build(
            dockerfile=parse_dockerfile(dockerfile),
            context=context,
            rootfs=Rootfs(root / "rootfs"),
            base_env=_base_env(root / "home", root / "shims"),
            pip_cache=_pip_cache(),
            log=root / "build.log",
        )
    with ThreadPoolExecutor(max_workers=len(builds)) as pool:
        done = {path: pool.submit(build.run) for path, build in builds.items()}
        return {
            path: Built(future.result(), builds[path].rootfs, builds[path].base_env)
            for path, future in done.items()
        }


@pytest.fixture
def database_server() -> Iterator[tuple[str, str]]:
    """A fresh, empty database on the test server: its URL, and the server's."""
    server = os.environ[POSTGRES_ENV]
    name = f"bookingcache_deploy_{uuid.uuid4().hex[:10]}"
    url = asyncio.run(pgserver.create_database(server, name))
    try:
        yield url, server
    finally:
        asyncio.run(pgserver.drop_database(server, name))


# Where a process listens: moved to a free loopback port each (containers each have their own).
_HOSTS = ("BOOKINGCACHE_HOST", "CONNECTOR_HOST")
_PORTS = ("BOOKINGCACHE_PORT", "BOOKINGCACHE_METRICS_PORT", "CONNECTOR_PORT")


@dataclass
class Running:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    def url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.env[variable]}"


def _environment(built: Built, spec: dict[str, Any], database_url: str) -> dict[str, str]:
    env = dict(built.base_env)
    env |= built.image.env
    env |= {name: str(value) for name, value in (spec.get("environment") or {}).items()}
    if "BOOKINGCACHE_DATABASE_URL" in env:
        assert "@postgres:5432/" in env["BOOKINGCACHE_DATABASE_URL"]
        env["BOOKINGCACHE_DATABASE_URL"] = database_url
    for name in _HOSTS:
        if name in env:
            env[name] = "127.0.0.1"
    for name in _PORTS:
        if name in env:
            env[name] = str(free_port())
    return env


def _healthy(check: Healthcheck, running: Running) -> None:
    """The health check passes within its start period and retries, or the test fails."""
    deadline = time.monotonic() + check.start_period_s + check.interval_s * check.retries
    last = ""
    while time.monotonic() < deadline:
        assert running.process.poll() is None, f"{running.name} exited; see {running.log}"
        try:
            result = subprocess.run(
                check.argv,
                env=running.env,
                capture_output=True,
                text=True,
                timeout=check.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            last = f"no answer within {check.timeout_s} s"  # a failed check, as Docker counts it
        else:
            if result.returncode == 0:
                return
            last = result.stderr.strip()
        time.sleep(POLL_S)
    raise AssertionError(f"{running.name} did not become healthy: {last}; see {running.log}")


def _metric(url: str, name: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def test_the_compose_stack_runs_from_its_images_commands(
    images: dict[Path, Built],
    database_server: tuple[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    database_url, _ = database_server
    variables = _variables()
    unknown = compose_variables(COMPOSE) - variables.keys()
    assert not unknown, f"compose.yaml reads variables this test does not set: {unknown}"
    scan = request.config.pluginmanager.get_plugin(PLUGIN_NAME).scan
    for name in (
        "POSTGRES_PASSWORD",
        "BOOKINGCACHE_ADMIN_TOKEN",
        "BOOKINGCACHE_SECRETS_KEY",
        "CONNECTOR_CLIENT_SECRET",
    ):
        scan.secret(variables[name], name)
    scan.secret(variables["CONNECTOR_WEBHOOK_SECRET"], "signing secret")
    services: dict[str, Any] = load_compose(COMPOSE, variables)["services"]

    for built in images.values():
        image = built.image
        assert image.user.split(":")[0] not in ("root", "0"), "the image runs as root"
        assert image.healthcheck is not None
        assert image.entrypoint
        assert image.cmd

    running: dict[str, Running] = {}
    completed: dict[str, int] = {}
    healthy: set[str] = set()
    try:
        for name in start_order(services):
            spec = services[name]
            if "build" not in spec:
                continue  # postgres (the local server stands for it) and the proxy
            for dependency, wanted in spec.get("depends_on", {}).items():
                if "build" not in services[dependency]:
                    continue
                condition = wanted["condition"]
                if condition == "service_completed_successfully":
                    assert completed.get(dependency) == 0, f"{name} needs {dependency} done"
                elif condition == "service_healthy":
                    assert dependency in healthy, f"{name} needs {dependency} healthy"
            context = (COMPOSE.parent / spec["build"]["context"]).resolve()
            built = images[(context / spec["build"]["dockerfile"]).resolve()]
            env = _environment(built, spec, database_url)
            argv = built.image.entrypoint + (spec.get("command") or built.image.cmd)
            log = tmp_path / f"{name}.log"
            scan.log_file(log)
            with log.open("ab") as sink:
                process = subprocess.Popen(
                    argv, env=env, cwd=built.image.workdir, stdout=sink, stderr=subprocess.STDOUT
                )
            current = Running(name, argv, process, env, log)
            if spec.get("restart") == "no":  # a step that runs to its end: the migration
                completed[name] = process.wait(timeout=120)
                assert completed[name] == 0, f"{name} failed; see {log}"
                continue
            running[name] = current
            check = compose_healthcheck(spec) or built.image.healthcheck
            assert check is not None, f"{name} has no health check"
            assert check.argv, f"{name}'s health check is disabled"
            _healthy(check, current)
            healthy.add(name)

        assert {"migrate"} == set(completed)
        apis = [r for r in running.values() if r.argv[:2] == ["bookingcache", "serve"]]
        workers = [r for r in running.values() if r.argv[:2] == ["bookingcache", "worker"]]
        connectors = [r for r in running.values() if r.argv[0] == "bookingcache-connector"]
        assert (len(apis), len(workers), len(connectors)) == (2, 2, 1)

        # One database behind both API processes: a tenant made through one is read through
        # the other.
        admin = {"Authorization": f"Bearer {variables['BOOKINGCACHE_ADMIN_TOKEN']}"}
        first, second = (r.url("BOOKINGCACHE_PORT") for r in apis)
        made = httpx.post(
            f"{first}/v1/tenants",
            json={"id": "contoso", "name": "Contoso", "event_source": "push"},
            headers=admin,
            timeout=10,
            trust_env=False,
        )
        assert made.status_code == 201, made.text
        read = httpx.get(f"{second}/v1/tenants/contoso", headers=admin, timeout=10, trust_env=False)
        assert read.status_code == 200, read.text
        assert read.json()["id"] == "contoso"
        for process in [*apis, *workers]:
            port = "BOOKINGCACHE_METRICS_PORT" if process in workers else "BOOKINGCACHE_PORT"
            assert _metric(process.url(port), "bookingcache_database_up") == 1
        # The service's processes run with the allocator their image preloads (jemalloc).
        for process in [*apis, *workers]:
            preload = process.env.get("LD_PRELOAD")
            assert preload == "libjemalloc.so.2", f"{process.name} preloads {preload!r}"
            maps = Path(f"/proc/{process.process.pid}/maps").read_text()
            assert preload in maps, f"{process.name} runs without {preload}"
        for worker in workers:
            queue = _metric(
                worker.url("BOOKINGCACHE_METRICS_PORT"), "bookingcache_sync_queue_depth"
            )
            assert queue is not None
        [connector] = connectors
        base = connector.url("CONNECTOR_PORT")
        assert httpx.get(f"{base}/healthz", timeout=10, trust_env=False).status_code == 200
        unsigned = httpx.put(f"{base}/v1/subscriptions", content=b"{}", timeout=10, trust_env=False)
        assert unsigned.status_code == 401  # its signed routes are served, and refuse this
    finally:
        stopped = {}
        for name, current in reversed(running.items()):
            if current.process.poll() is None:
                current.process.send_signal(signal.SIGTERM)
            try:
                stopped[name] = current.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                current.process.kill()
                stopped[name] = current.process.wait()
    assert all(code == 0 for code in stopped.values()), stopped
