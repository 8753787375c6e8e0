from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import azure.functions as func

from bookingcache_connector.bootstrap import Connector
from bookingcache_connector.functions import build_function_app
from bookingcache_connector.signing import Signer

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph, sample
from .receiver import Receiver
from .test_relay import A1, B2, C3, known_subscriptions, relay_connector

BASE = "https://contoso-connector.azurewebsites.net"
APP_FOLDER = Path(__file__).resolve().parents[1]


def handlers(connector: Connector) -> dict[str, Any]:
    app = build_function_app(lambda: connector)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        method=method, url=BASE + path, headers=headers or {}, params=params or {}, body=body
    )


async def test_routes_and_timers_are_registered(make_connector: Any) -> None:
    app = build_function_app(lambda: make_connector())
    bindings = {
        f.get_function_name(): json.loads(f.get_function_json())["bindings"]
        for f in app.get_functions()
    }
    routes = {
        name: b[0].get("route") for name, b in bindings.items() if b[0]["type"] == "httpTrigger"
    }
    assert routes == {
        "healthz": "healthz",
        "subscriptions": "v1/subscriptions",
        "calendar_events": "v1/calendars/{mailbox}/events",
        "graph_notifications": "graph/notifications",
        "graph_lifecycle": "graph/lifecycle",
    }
    timers = {name for name, b in bindings.items() if b[0]["type"] == "timerTrigger"}
    assert timers == {"renew_subscriptions", "relay_drain"}


async def test_subscriptions_and_events_through_function_handlers(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    fns = handlers(make_connector())
    health = await fns["healthz"](request("GET", "/healthz"))
    assert health.status_code == 200
    body = json.dumps(
        {
            "mailboxes": [A1, B2],
            "notificationUrl": "https://svc.example/graph/notifications/t",
            "lifecycleNotificationUrl": None,
            "clientState": "cs",
        }
    ).encode()
    unsigned = await fns["subscriptions"](request("PUT", "/v1/subscriptions", body))
    assert unsigned.status_code == 401
    assert graph.subscriptions == {}
    signer = Signer(WEBHOOK_SECRET, clock)
    response = await fns["subscriptions"](
        request("PUT", "/v1/subscriptions", body, signer.headers("PUT", "/v1/subscriptions", body))
    )
    assert response.status_code == 200
    assert [r["status"] for r in json.loads(response.get_body())["subscriptions"]] == [
        "created",
        "created",
    ]

    graph.events[A1] = sample("calendarview-page1.json")["value"]
    path = f"/v1/calendars/{A1}/events"
    query = "start=2026-11-24T00:00:00Z&end=2026-11-26T00:00:00Z"
    events = await fns["calendar_events"](
        request("GET", f"{path}?{query}", headers=signer.headers("GET", f"{path}?{query}", b""))
    )
    assert events.status_code == 200, events.get_body()
    assert len(json.loads(events.get_body())["events"]) == 5


async def test_relay_and_timers_through_function_handlers(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET, down=True)
    connector = relay_connector(make_connector, receiver)
    fns = handlers(connector)
    token = "Validation: Testing client application reachability"
    handshake = await fns["graph_notifications"](
        request(
            "POST",
            "/graph/notifications?validationToken=Validation%3A%20Testing%20client%20application%20reachability",
        )
    )
    assert handshake.status_code == 200
    assert handshake.get_body().decode() == token
    assert handshake.mimetype == "text/plain"
    ack = await fns["graph_notifications"](
        request(
            "POST", "/graph/notifications", json.dumps(sample("notification-batch.json")).encode()
        )
    )
    assert ack.status_code == 202
    await fns["relay_drain"](None)  # the service is down: kept
    assert connector.store.pending_count() == 2
    assert receiver.accepted == []
    receiver.down = False
    await fns["relay_drain"](None)
    assert receiver.changes() == [(A1, "created"), (B2, "updated")]
    # the renewal timer with a stored desired set converges it
    clock.advance(1)
    connector.store.save_desired(
        {
            "mailboxes": [A1],
            "notificationUrl": "https://relay.test/graph/notifications",
            "lifecycleNotificationUrl": None,
            "clientState": "k3Yq0pL9-room-a1",
        }
    )
    await fns["renew_subscriptions"](None)
    assert (
        graph.by_mailbox()[A1.lower()]["notificationUrl"]
        == "https://relay.test/graph/notifications"
    )


def test_function_app_module_builds_nothing_at_import(tmp_path: Any, monkeypatch: Any) -> None:
    import importlib.util
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # the default state directory would appear here if built
    path = Path(__file__).resolve().parents[1] / "function_app.py"
    spec = importlib.util.spec_from_file_location("connector_function_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {f.get_function_name() for f in module.app.get_functions()}
    assert {"subscriptions", "graph_notifications", "renew_subscriptions"} <= names
    assert list(tmp_path.iterdir()) == []


async def test_the_relay_timer_pushes_the_reconciliations_windows(
    make_connector: Any, graph: FakeGraph
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver, push_events=True)
    await connector.subscriptions.list_all()
    await handlers(connector)["relay_drain"](None)
    [call] = receiver.accepted
    assert sorted(window["mailbox"] for window in call["windows"]) == [A1, B2, C3]


def test_the_source_folder_lists_what_the_functions_build_installs() -> None:
    """The app folder's requirements.txt names the connector's dependencies with the bounds of
    pyproject.toml, its [azure] extra included; .funcignore keeps local settings out."""
    project = tomllib.loads((APP_FOLDER / "pyproject.toml").read_text())["project"]
    wanted = sorted([*project["dependencies"], *project["optional-dependencies"]["azure"]])
    lines = (APP_FOLDER / "requirements.txt").read_text().splitlines()
    assert sorted(line for line in lines if line and not line.startswith("#")) == wanted
    ignored = (APP_FOLDER / ".funcignore").read_text().splitlines()
    assert {"local.settings.json", "tests", ".venv"} <= set(ignored)
    example = json.loads((APP_FOLDER / "local.settings.example.json").read_text())
    assert example["Values"]["FUNCTIONS_WORKER_RUNTIME"] == "python"
