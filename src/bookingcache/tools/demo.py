"""``bookingcache demo``: the whole product on one machine, in one command.

It starts the Graph emulator (seeded demo tenant, TLS), the service on SQLite and the customer's
connector, each as its own process by its own command (the service never imports the other
two); creates a tenant through the API; links the emulator's rooms the way a map editor does,
through the rooms API, which makes the service converge the subscriptions through the
connector (Alternative 1: Graph notifies the service; ``--alternative 2``: Graph notifies the
connector's relay, which forwards); starts the emulator's booking simulator; and prints the
URLs and tokens to use. Ctrl-C (or SIGTERM) stops every process it started.

It should look alive whatever the day and hour: the emulator is seeded ``live`` (meetings around
the current instant, not only in the working days of the week) and its simulator books, ends and
moves meetings from now to a few hours ahead, so rooms change on the page within seconds. Each
room gets a floor plan shape (``floorplan``) and its seats.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from bookingcache.errors import BookingCacheError
from bookingcache.tools import processes
from bookingcache.tools.floorplan import floor_plans
from bookingcache.tools.processes import (
    LISTENING,
    Child,
    NotAnswering,
    free_port,
    serve_command,
    wait_answering,
)

TENANT = "demo"
_STOP_GRACE_S = 10.0
# The simulator books from now to this many hours ahead, whatever the day and hour.
NEAR_NOW_HOURS = 3
# Everything the demo made, secrets included, for scripts and tests (mode 0600).
STATE_FILE = "demo.json"


class DemoError(BookingCacheError):
    """The demo could not start (a child failed, a port was taken, a step timed out)."""


@dataclass
class Demo:
    work_dir: Path
    alternative: int
    port: int
    rate_per_s: float
    say: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    stop_requested: threading.Event = field(default_factory=threading.Event)

    # --- children ------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        # A session of its own: Ctrl-C reaches the demo, which stops the children in order.
        child = processes.start(
            argv, env=env, name=name, log=self.work_dir / f"{name}.log", new_session=True
        )
        self.children.append(child)
        return child

    def _ready(self, child: Child, accept: Callable[[str], bool], timeout_s: float) -> str:
        try:
            return child.ready(accept, timeout_s=timeout_s)
        except NotAnswering as exc:
            raise DemoError(f"{exc}; see {child.log}") from exc

    def start_emulator(self) -> dict[str, Any]:
        argv = [
            _console_script("graph-emulator"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "live",
            "--tls",
            "--tls-dir",
            str(self.work_dir / "tls"),
            "--allow-http-notifications",
        ]
        child = self._spawn("graph-emulator", argv, _clean_env())
        line = self._ready(child, lambda text: text.startswith("{"), timeout_s=30)
        info: dict[str, Any] = json.loads(line)
        return info

    def start_service(self, admin_token: str) -> str:
        env = _clean_env() | {
            "BOOKINGCACHE_ENVIRONMENT": "development",
            "BOOKINGCACHE_ADMIN_TOKEN": admin_token,
            "BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S": "0.5",
        }
        argv = serve_command(self.work_dir / "service", port=self.port)
        child = self._spawn("service", argv, env)
        self._ready(child, lambda text: LISTENING.search(text) is not None, timeout_s=60)
        return child.banner_url

    def start_connector(
        self, *, port: int, emulator: dict[str, Any], secret: str, service_url: str
    ) -> str:
        root = str(emulator["base_url"]).rsplit("/v1.0", 1)[0]
        env = _clean_env() | {
            "CONNECTOR_TENANT_ID": str(emulator["tenant_id"]),
            "CONNECTOR_CLIENT_ID": str(emulator["client_id"]),
            "CONNECTOR_CLIENT_SECRET": str(emulator["client_secret"]),
            "CONNECTOR_AUTHORITY": root,
            "CONNECTOR_GRAPH_URL": str(emulator["base_url"]),
            "CONNECTOR_CA_BUNDLE": str(emulator["cert_path"]),
            "CONNECTOR_WEBHOOK_SECRET": secret,
            "CONNECTOR_SERVICE_URL": service_url,
            "CONNECTOR_SERVICE_TENANT": TENANT,
            "CONNECTOR_STATE_DIR": str(self.work_dir / "connector"),
        }
        # The connector's own hardened server (bounded requests, read timeouts).
        argv = [
            sys.executable,
            "-m",
            "bookingcache_connector",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        child = self._spawn("connector", argv, env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_answering(child.process, f"{url}/", timeout_s=30)
        except NotAnswering as exc:
            raise DemoError(f"{child.name} {exc}; see {child.log}") from exc
        return url

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        """Stop the children, the service first (it may still be talking to the others)."""
        for child in sorted(self.children, key=lambda c: c.name != "service"):
            child.stop(timeout_s=_STOP_GRACE_S)

    # --- the service's API ---------------------------------------------------------------------
    def setup(self) -> dict[str, Any]:
        admin_token = secrets.token_urlsafe(32)
        self.say("starting the Graph emulator ...")
        emulator = self.start_emulator()
        self.say("starting the service ...")
        service_url = self.start_service(admin_token)
        connector_port = free_port()
        connector_url = f"http://127.0.0.1:{connector_port}"
        admin = httpx.Client(
            base_url=service_url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=30,
            trust_env=False,
        )
        with admin:
            created = admin.post(
                "/v1/tenants",
                json={
                    "id": TENANT,
                    "name": "Demo organisation",
                    "event_source": "connector",
                    "connector_url": connector_url,
                    "default_time_zone": "Europe/Berlin",
                    "notification_mode": "relay" if self.alternative == 2 else "direct",
                },
            )
            _expect(created, 201, "creating the tenant")
            tenant_secrets = created.json()["secrets"]
            self.say("starting the connector ...")
            self.start_connector(
                port=connector_port,
                emulator=emulator,
                secret=tenant_secrets["signing_secret"],
                service_url=service_url,
            )
            rooms = _rooms_of(emulator)
            self.say(f"linking {len(rooms)} rooms through the rooms API ...")
            for room_id, body in rooms.items():
                if self.stop_requested.is_set():
                    raise DemoError("interrupted")
                _expect(
                    admin.put(f"/v1/tenants/{TENANT}/rooms/{room_id}", json=body), 201, "a room"
                )
            self.say("waiting for the subscriptions and the first read of each calendar ...")
            health = self._wait_subscribed(admin, len(rooms))
        control = httpx.Client(
            base_url=str(emulator["control_url"]),
            verify=ssl.create_default_context(cafile=str(emulator["cert_path"])),
            timeout=30,
            trust_env=False,
        )
        with control:
            started = control.post(
                "/simulator/start",
                json={"seed": 1, "rate_per_s": self.rate_per_s, "near_now_hours": NEAR_NOW_HOURS},
            )
            _expect(started, 201, "starting the simulator")
        return {
            "service_url": service_url,
            "admin_token": admin_token,
            "tenant": TENANT,
            "read_token": tenant_secrets["read_token"],
            "signing_secret": tenant_secrets["signing_secret"],
            "connector_url": connector_url,
            "emulator_control_url": emulator["control_url"],
            "emulator_cert": emulator["cert_path"],
            "alternative": self.alternative,
            "rooms": list(rooms),
            "floors": _floors_of(rooms),
            "subscriptions": health["counts"],
            "pids": {child.name: child.process.pid for child in self.children},
        }

    def _wait_subscribed(self, admin: httpx.Client, rooms: int) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while True:
            answer = admin.get(f"/v1/tenants/{TENANT}/subscriptions")
            _expect(answer, 200, "reading subscription health")
            health: dict[str, Any] = answer.json()
            counts = health["counts"]
            subscribed = sum(n for state, n in counts.items() if state != "unsubscribed")
            # ... and every calendar's first read is in, so what follows is news.
            read = all(row["last_success_at"] for row in health["calendars"])
            calendars = len(health["calendars"])
            if calendars >= rooms and subscribed == calendars and read:
                return health
            if time.monotonic() > deadline:
                raise DemoError(f"the subscriptions were not all created: {counts}")
            if self.stop_requested.is_set():
                raise DemoError("interrupted")
            if (dead := self.dead_child()) is not None:
                raise DemoError(f"{dead.name} exited; see {dead.log}")
            time.sleep(0.25)


def _rooms_of(emulator: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map room id -> the rooms API body, from the emulator's room mailboxes, with a shape on
    its floor's plan."""
    rooms: dict[str, dict[str, Any]] = {}
    for mailbox in emulator["mailboxes"]:
        room_id = str(mailbox["upn"]).split("@", 1)[0]
        body: dict[str, Any] = {"mailbox": mailbox["upn"], "name": mailbox["display_name"]}
        if mailbox.get("building"):
            body["building"] = str(mailbox["building"])
        if mailbox.get("floor") is not None:
            body["floor"] = str(mailbox["floor"])
        if mailbox.get("time_zone"):
            body["time_zone"] = mailbox["time_zone"]
        if mailbox.get("capacity") is not None:
            body["capacity"] = int(mailbox["capacity"])
        rooms[room_id] = body
    for room_id, shape in floor_plans(rooms).items():
        rooms[room_id]["geometry"] = shape
    return rooms


def _floors_of(rooms: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Building -> its floors, in natural order ("2" before "10")."""
    floors: dict[str, set[str]] = {}
    for body in rooms.values():
        floors.setdefault(body.get("building") or "", set()).add(body.get("floor") or "")
    return {
        building: sorted(found, key=lambda f: (len(f), f))
        for building, found in sorted(floors.items())
    }


def port_taken(port: int) -> bool:
    """Whether something listens on the loopback ``port`` already (0: any port, never)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status and not (status == 201 and response.status_code == 200):
        raise DemoError(f"{what} failed: {response.status_code} {response.text[:500]}")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _console_script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"{name} is not installed; run scripts/bootstrap")
    return found


def _clean_env() -> dict[str, str]:
    """The environment for a child: a CA bundle variable would make MSAL (requests) distrust
    the emulator's own certificate."""
    env = dict(os.environ)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name, None)
    return env


def banner(info: dict[str, Any], work_dir: Path) -> str:
    url, read, tenant = info["service_url"], info["read_token"], info["tenant"]
    room = info["rooms"][0] if info["rooms"] else "ROOM"
    mode = "Graph -> service" if info["alternative"] == 1 else "Graph -> connector relay -> service"
    floors = info["floors"]
    places = "\n".join(
        f"  {building or '(no building)':<16} floors {', '.join(found)}"
        for building, found in floors.items()
    )
    building = next(iter(floors), "")
    floor = floors[building][0] if building else ""
    bulk = json.dumps({"building": building, "floor": floor})
    logs = ", ".join(f"{child}.log" for child in info["pids"])
    return f"""
bookingcache demo is running (Alternative {info["alternative"]}: {mode})

  live page        {url}/   (sign in with the read token below)
  service          {url}   (API docs: {url}/docs)
  admin token      {info["admin_token"]}
  tenant           {tenant}
  read token       {read}
  connector        {info["connector_url"]}
  Graph emulator   {info["emulator_control_url"]}   (control API; CA: {info["emulator_cert"]})
  subscriptions    {info["subscriptions"]}
  logs             {work_dir}/ ({logs})

Buildings and floors:
{places}

Try:
  curl -H 'Authorization: Bearer {read}' {url}/v1/tenants/{tenant}/rooms/{room}/availability
  curl -X POST -H 'Authorization: Bearer {read}' -H 'Content-Type: application/json' \\
    -d '{bulk}' {url}/v1/tenants/{tenant}/availability
  curl -H 'Authorization: Bearer {read}' '{url}/v1/tenants/{tenant}/rooms:free?capacity=6'
  curl -H 'Authorization: Bearer {read}' {url}/v1/tenants/{tenant}/subscriptions
  curl -H 'Authorization: Bearer {info["admin_token"]}' {url}/metrics

The emulator's simulator is booking, ending and moving meetings from now to {NEAR_NOW_HOURS} hours
ahead: watch the live page. Press Ctrl-C to stop everything.
"""


def ready_line(info: dict[str, Any], work_dir: Path) -> str:
    """The one JSON line for scripts: where things are, no secrets (they are in the readable
    block and in the state file, mode 0600)."""
    return json.dumps(
        {
            "demo": "ready",
            "service_url": info["service_url"],
            "page_url": info["service_url"] + "/",
            "tenant": info["tenant"],
            "state_file": str(work_dir / STATE_FILE),
            "pids": info["pids"],
        }
    )


def write_state(info: dict[str, Any], work_dir: Path) -> None:
    path = work_dir / STATE_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(info, out, indent=2)


def run_demo(
    *,
    alternative: int = 1,
    port: int = 8080,
    data_dir: str | None = None,
    rate_per_s: float = 0.5,
) -> int:
    if port_taken(port):
        print(
            f"bookingcache demo: port {port} is taken (another service or demo?); "
            f"choose another with --port {port + 1}, or --port 0 for any free port",
            file=sys.stderr,
        )
        return 2
    if data_dir is not None:
        work_dir = Path(data_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        temporary = None
    else:
        temporary = tempfile.mkdtemp(prefix="bookingcache-demo-")
        work_dir = Path(temporary)
    demo = Demo(work_dir=work_dir, alternative=alternative, port=port, rate_per_s=rate_per_s)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        demo.stop_requested.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 1
    try:
        try:
            info = demo.setup()
        except (DemoError, httpx.HTTPError) as exc:
            if demo.stop_requested.is_set():
                status = 0
                return status
            print(f"bookingcache demo: {exc}", file=sys.stderr)
            for child in demo.children:
                if child.log is not None and (tail := _tail(child.log)):
                    print(f"--- {child.log} (last lines) ---\n{tail}", file=sys.stderr)
            return status
        write_state(info, work_dir)
        print(ready_line(info, work_dir), flush=True)
        print(banner(info, work_dir), flush=True)
        while not demo.stop_requested.wait(0.5):
            if (dead := demo.dead_child()) is not None:
                print(f"bookingcache demo: {dead.name} exited; see {dead.log}", file=sys.stderr)
                return 1
        print("stopping ...", flush=True)
        status = 0
        return status
    finally:
        demo.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if temporary is not None and status == 0:
            shutil.rmtree(temporary, ignore_errors=True)  # kept after a failure, for its logs
