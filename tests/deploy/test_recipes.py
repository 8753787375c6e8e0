"""What can be checked of deploy/ without running it: the images are multi-stage, run as a user
without privileges, check their health and start the packages' own commands; the compose file
has the processes it promises; the proxy's limits are the service's own."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bookingcache.api.app import MAX_BODY_BYTES
from bookingcache.api.rooms import MAX_IMPORT_BYTES
from bookingcache.cli import build_parser
from bookingcache.settings import Settings
from bookingcache_connector.app import MAX_BODY as CONNECTOR_MAX_BODY
from bookingcache_connector.cli import parser as connector_parser
from tests.deploy.recipes import (
    DockerIgnore,
    compose_healthcheck,
    healthcheck_of,
    load_compose,
    parse_dockerfile,
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


def _caddy(directive: str, text: str) -> list[str]:
    return re.findall(rf"^\s*{directive}\s+(\S+)\s*$", text, flags=re.MULTILINE)


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)(KiB|MiB)", size)
    assert match, size
    return int(match[1]) * {"KiB": 1024, "MiB": 1024 * 1024}[match[2]]


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * {"s": 1, "m": 60}[match[2]]


def test_the_proxy_bounds_requests_as_the_service_does() -> None:
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    defaults = Settings()
    # Body limits: the room import's, everything else's, the connector's.
    assert [_bytes(size) for size in _caddy("max_size", caddyfile)] == [
        MAX_IMPORT_BYTES,
        MAX_BODY_BYTES,
        CONNECTOR_MAX_BODY,
    ]
    assert "path_regexp ^/v1/tenants/[^/]+/rooms:import$" in caddyfile
    assert _bytes(_caddy("max_header_size", caddyfile)[0]) == defaults.http_max_head_bytes
    assert _seconds(_caddy("read_header", caddyfile)[0]) == defaults.http_header_timeout_s
    # The proxy's idle connections to the processes close before the processes close them.
    [keepalive] = _caddy("keepalive", caddyfile)
    services = load_compose(DEPLOY / "compose.yaml", VARIABLES)["services"]
    for name in ("api-1", "api-2"):
        service_keep_alive = float(services[name]["environment"]["BOOKINGCACHE_HTTP_KEEP_ALIVE_S"])
        assert _seconds(keepalive) < service_keep_alive
    connector = services["connector"]["environment"]
    assert _seconds(keepalive) < float(connector["CONNECTOR_HTTP_KEEP_ALIVE_S"])
    # One proxy in front: the service believes one X-Forwarded-For entry.
    assert services["api-1"]["environment"]["BOOKINGCACHE_TRUSTED_PROXY_HOPS"] == "1"


def test_the_build_context_holds_the_sources_and_nothing_else() -> None:
    ignore = DockerIgnore(DEPLOY / "Dockerfile.dockerignore")
    assert not ignore.excluded("pyproject.toml")
    assert not ignore.excluded("src/bookingcache/cli/__init__.py")
    assert ignore.excluded("src/bookingcache/__pycache__/cli.cpython-311.pyc")
    assert ignore.excluded(".venv/bin/python")
    assert ignore.excluded("tests/conftest.py")
    assert ignore.excluded("data/admin-token")
