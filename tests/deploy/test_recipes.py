"""What can be checked of deploy/ without running it: the images are multi-stage, run as a user
without privileges, check their health and start the packages' own commands; the compose file
has the processes it promises; the proxy's limits are the service's own."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookingcache.api.app import MAX_BODY_BYTES
from bookingcache.api.rooms import MAX_IMPORT_BYTES
from bookingcache.cli import build_parser
from bookingcache.settings import Settings
from bookingcache_connector.app import MAX_BODY as CONNECTOR_MAX_BODY
from bookingcache_connector.cli import parser as connector_parser
from tests.deploy.recipes import (
    OS_PACKAGES,
    DockerIgnore,
    compose_healthcheck,
    healthcheck_of,
    load_compose,
    parse_dockerfile,
    require_host_packages,
    start_order,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGES = {
    "Dockerfile": (REPO / "pyproject.toml", "bookingcache"),
    "connector.Dockerfile": (REPO / "connector" / "pyproject.toml", "bookingcache-connector"),
}
VARIABLES = {
    "POSTGRES_PASSWORD": "p" * 32,
    "BOOKINGCACHE_ADMIN_TOKEN": "t" * 32,
    "BOOKINGCACHE_SECRETS_KEY": "k" * 43 + "=",
    "BOOKINGCACHE_DOMAIN": "bookingcache.example.com",
    "CONNECTOR_DOMAIN": "connector.example.com",
    "ACME_EMAIL": "ops@example.com",
    "CONNECTOR_TENANT_ID": "tenant",
    "CONNECTOR_CLIENT_ID": "client",
    "CONNECTOR_CLIENT_SECRET": "s" * 32,
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_an_image_is_multi_stage_unprivileged_and_starts_its_packages_command(name: str) -> None:
    pyproject, script = IMAGES[name]
    dockerfile = parse_dockerfile(DEPLOY / name)
    assert len(dockerfile.stages) >= 2
    final = dockerfile.final
    # Only the build's virtualenv reaches the image: no sources, no wheels, no compilers.
    copies = final.all("COPY")
    assert copies
    assert all(copy.flag("from") == dockerfile.stages[0].name for copy in copies)
    user = final.last("USER")
    assert user is not None
    assert user.value.split(":")[0] not in ("root", "0")
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None
    assert f"{script} healthcheck" in " ".join(healthcheck_of(healthcheck).argv)
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert entrypoint.exec_form() == [script]
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert script in scripts  # the console script the package installs
    cmd = final.last("CMD")
    assert cmd is not None
    assert cmd.exec_form() == ["serve"]


def test_the_service_image_runs_its_processes_with_jemalloc() -> None:
    final = parse_dockerfile(DEPLOY / "Dockerfile").final
    installs = [OS_PACKAGES.fullmatch(run.value) for run in final.all("RUN")]
    assert [match.group(1).split() for match in installs if match] == [["libjemalloc2"]]
    env = " ".join(instruction.value for instruction in final.all("ENV"))
    assert "LD_PRELOAD=libjemalloc.so.2" in env.split()
    # The image test runs the image's processes on this machine: it needs the same package.
    require_host_packages(["libjemalloc2"])
    with pytest.raises(AssertionError, match="no-such-package-here"):
        require_host_packages(["no-such-package-here"])


def test_the_compose_file_runs_a_migration_two_apis_two_workers_a_connector_and_a_proxy() -> None:
    services = load_compose(DEPLOY / "compose.yaml", VARIABLES)["services"]
    commands = {name: spec.get("command") for name, spec in services.items() if "build" in spec}
    assert sorted(commands.items()) == [
        ("api-1", ["serve", "--no-worker"]),
        ("api-2", ["serve", "--no-worker"]),
        ("connector", None),  # the image's CMD: serve
        ("migrate", ["migrate"]),
        ("worker-1", ["worker"]),
        ("worker-2", ["worker"]),
    ]
    for name, command in commands.items():
        if name != "connector":
            build_parser().parse_args(command)  # a command the CLI knows
    connector_parser().parse_args(["serve"])
    # The migration runs first and alone; the processes of the service wait for it.
    order = start_order(services)
    assert order.index("migrate") < min(order.index(n) for n in ("api-1", "worker-1"))
    for name in ("api-1", "api-2", "worker-1", "worker-2"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }
        environment = services[name]["environment"]
        assert environment["BOOKINGCACHE_ENVIRONMENT"] == "production"
        assert environment["BOOKINGCACHE_DATABASE_URL"].startswith("postgresql://")
    for name in ("worker-1", "worker-2"):
        check = compose_healthcheck(services[name])
        assert check is not None
        assert "$BOOKINGCACHE_METRICS_PORT" in check.argv[-1]
    assert services["proxy"]["image"].startswith("caddy:")
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]


@pytest.fixture(scope="module")
def caddy_config() -> dict[str, Any]:
    """deploy/Caddyfile as Caddy itself reads it (``caddy adapt --validate``), with the
    compose file's variables: its JSON configuration."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("caddy is not installed: run scripts/system-packages (Debian's caddy)")
    environment = {key: VARIABLES[key] for key in ("BOOKINGCACHE_DOMAIN", "CONNECTOR_DOMAIN")}
    result = subprocess.run(
        [caddy, "adapt", "--config", "Caddyfile", "--adapter", "caddyfile", "--validate"],
        cwd=DEPLOY,
        env={"PATH": "/usr/bin:/bin", "ACME_EMAIL": VARIABLES["ACME_EMAIL"], **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _handlers(node: Any, kind: str) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("handler") == kind:
            yield node
        for value in node.values():
            yield from _handlers(value, kind)
    elif isinstance(node, list):
        for value in node:
            yield from _handlers(value, kind)


_SECOND_NS = 1_000_000_000


def test_the_proxy_bounds_requests_as_the_service_does(caddy_config: dict[str, Any]) -> None:
    [server] = caddy_config["apps"]["http"]["servers"].values()
    defaults = Settings()
    assert server["max_header_bytes"] == defaults.http_max_head_bytes
    assert server["read_header_timeout"] == defaults.http_header_timeout_s * _SECOND_NS
    # Body limits, in the Caddyfile's order: the room import's, everything else's to the
    # service, the connector's.
    sizes = [handler["max_size"] for handler in _handlers(server["routes"], "request_body")]
    assert sizes == [MAX_IMPORT_BYTES, MAX_BODY_BYTES, CONNECTOR_MAX_BODY]
    proxies = list(_handlers(server["routes"], "reverse_proxy"))
    upstreams = [sorted(u["dial"] for u in proxy["upstreams"]) for proxy in proxies]
    assert upstreams == [["api-1:8080", "api-2:8080"]] * 2 + [["connector:8080"]]
    services = load_compose(DEPLOY / "compose.yaml", VARIABLES)["services"]
    keep_alive = {
        "api-1:8080": services["api-1"]["environment"]["BOOKINGCACHE_HTTP_KEEP_ALIVE_S"],
        "api-2:8080": services["api-2"]["environment"]["BOOKINGCACHE_HTTP_KEEP_ALIVE_S"],
        "connector:8080": services["connector"]["environment"]["CONNECTOR_HTTP_KEEP_ALIVE_S"],
    }
    for proxy in proxies:
        # The proxy's idle connections to a process close before the process closes them.
        idle_ns = proxy["transport"]["keep_alive"]["idle_timeout"]
        for upstream in proxy["upstreams"]:
            assert idle_ns < float(keep_alive[upstream["dial"]]) * _SECOND_NS
        # An upstream is taken out while its readiness (the connector: liveness) fails.
        assert proxy["health_checks"]["active"]["uri"] in ("/readyz", "/healthz")
    # One proxy in front: the service believes one X-Forwarded-For entry.
    assert services["api-1"]["environment"]["BOOKINGCACHE_TRUSTED_PROXY_HOPS"] == "1"


def _routes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "match" in node and "handle" in node:
            yield node
        for value in node.values():
            yield from _routes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _routes(value)


def test_the_proxy_does_not_serve_the_metrics(caddy_config: dict[str, Any]) -> None:
    [server] = caddy_config["apps"]["http"]["servers"].values()
    metrics = [
        route
        for route in _routes(server["routes"])
        if any("/metrics" in matcher.get("path", []) for matcher in route["match"])
    ]
    assert len(metrics) == 1  # the service's name; the connector has no /metrics
    [answer] = _handlers(metrics[0]["handle"], "static_response")
    assert answer["status_code"] == 404
    assert not list(_handlers(metrics[0]["handle"], "reverse_proxy"))


def test_the_build_context_holds_the_sources_and_nothing_else() -> None:
    ignore = DockerIgnore(DEPLOY / "Dockerfile.dockerignore")
    assert not ignore.excluded("pyproject.toml")
    assert not ignore.excluded("src/bookingcache/cli/__init__.py")
    assert ignore.excluded("src/bookingcache/__pycache__/cli.cpython-311.pyc")
    assert ignore.excluded(".venv/bin/python")
    assert ignore.excluded("tests/conftest.py")
    assert ignore.excluded("data/admin-token")
