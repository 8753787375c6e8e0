"""The Functions package an administrator deploys, tried as the Functions host tries it: built
with the one documented command, unpacked into a folder, its requirements installed into a fresh
virtual environment from the bundled wheels only (no index), and ``function_app`` imported from
the app folder. The same environment then imports the source folder's ``function_app.py`` with
the installed connector removed, as ``func start`` in ``connector/`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.side_lane]

CONNECTOR = Path(__file__).resolve().parents[1]
ROOT = CONNECTOR.parent
VERSION = tomllib.loads((CONNECTOR / "pyproject.toml").read_text())["project"]["version"]
FUNCTIONS = [
    "calendar_events",
    "graph_lifecycle",
    "graph_notifications",
    "healthz",
    "relay_drain",
    "renew_subscriptions",
    "subscriptions",
]
# What the Functions host does: the app folder first on the path, then ``import function_app``
# and look for ``app``.
HOST = (
    "import json, sys; sys.path.insert(0, '.'); import function_app; "
    "import bookingcache_connector; "
    "print(json.dumps({'functions': sorted(f.get_function_name() for f in "
    "function_app.app.get_functions()), 'package': bookingcache_connector.__file__}))"
)


def offline() -> dict[str, str]:
    """The environment of an install that may use nothing but the bundle: no pip configuration
    (no index, no find-links of this machine) and no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    return env


def host_import(python: Path, folder: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(python), "-c", HOST], cwd=folder, env=offline(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_the_functions_package_installs_offline_and_imports_as_the_host_does(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    built = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package-connector"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    wheel = out / f"bookingcache_connector-{VERSION}-py3-none-any.whl"
    package = out / f"bookingcache-connector-functions-{VERSION}.zip"
    assert wheel.is_file()
    assert package.is_file()

    app = tmp_path / "app"
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        archive.extractall(app)
    # The layout Functions takes: the app's files at the root of the zip.
    assert {"function_app.py", "host.json", "requirements.txt", ".funcignore"} <= names
    assert f"wheels/{wheel.name}" in names
    requirements = (app / "requirements.txt").read_text()
    assert wheel.name in requirements
    assert f"bookingcache-connector[azure]=={VERSION}" in requirements.splitlines()
    assert "--no-index" in requirements.splitlines()

    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(app / "wheels"),
            "-r",
            "requirements.txt",
        ],
        cwd=app,
        env=offline(),
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr

    packaged = host_import(python, app)
    assert packaged["functions"] == FUNCTIONS
    assert str(environment) in str(packaged["package"])

    # The source folder: function_app.py takes the connector from src/ next to it.
    removed = subprocess.run(
        [str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "bookingcache-connector"],
        env=offline(),
        capture_output=True,
        text=True,
    )
    assert removed.returncode == 0, removed.stderr
    source = host_import(python, CONNECTOR)
    assert source["functions"] == FUNCTIONS
    assert str(CONNECTOR / "src") in str(source["package"])
