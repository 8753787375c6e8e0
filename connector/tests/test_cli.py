from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bookingcache_connector.bootstrap import Connector, build_connector
from bookingcache_connector.cli import main, read_mailboxes
from bookingcache_connector.config import load_settings

from .fakes import (
    AUTHORITY_HOST,
    CLIENT_ID,
    CLIENT_SECRET,
    GRAPH,
    TENANT_ID,
    FakeClock,
    FakeGraph,
    identity_platform,
)
from .servers import ServerThread

URL = "https://relay.contoso.example/graph/notifications"


def env(tmp_path: Path, **over: str) -> dict[str, str]:
    values = {
        "CONNECTOR_TENANT_ID": TENANT_ID,
        "CONNECTOR_CLIENT_ID": CLIENT_ID,
        "CONNECTOR_CLIENT_SECRET": CLIENT_SECRET,
        "CONNECTOR_AUTHORITY": AUTHORITY_HOST,
        "CONNECTOR_GRAPH_URL": GRAPH,
        "CONNECTOR_STATE_DIR": str(tmp_path / "state"),
    }
    values.update(over)
    return values


def run_text(
    graph: FakeGraph, clock: FakeClock, environ: Mapping[str, str], *argv: str
) -> tuple[int, str]:
    def factory(e: Mapping[str, str]) -> Connector:
        return build_connector(
            load_settings(e),
            clock=clock,
            graph_transport=graph.transport(),
            msal_transport=identity_platform(),
            rng=random.Random(1),
        )

    out = io.StringIO()
    code = main(list(argv), env=environ, factory=factory, out=out)
    return code, out.getvalue()


def run(
    graph: FakeGraph, clock: FakeClock, environ: Mapping[str, str], *argv: str
) -> tuple[int, Any]:
    code, text = run_text(graph, clock, environ, "--json", *argv)
    return code, json.loads(text) if text else None


def subscribe(
    graph: FakeGraph, clock: FakeClock, environ: Mapping[str, str], rooms: Path
) -> tuple[int, Any]:
    """``subscribe`` of the mailboxes listed in ``rooms`` to ``URL``, with a client state."""
    return run(
        graph,
        clock,
        environ,
        "subscribe",
        "--mailboxes",
        str(rooms),
        "--notification-url",
        URL,
        "--client-state",
        "s3cret",
    )


def test_subscribe_list_renew_delete(tmp_path: Path) -> None:
    clock = FakeClock()
    graph = FakeGraph(clock=clock)
    rooms = tmp_path / "rooms.txt"
    rooms.write_text(
        "# building A\nroom-a1@contoso.example\n\nroom-a2@contoso.example  # 2nd floor\n"
    )
    e = env(tmp_path)
    code, rows = subscribe(graph, clock, e, rooms)
    assert code == 0
    assert [r["status"] for r in rows] == ["created", "created"]
    code, listed = run(graph, clock, e, "list")
    assert code == 0
    assert sorted(s["resource"] for s in listed) == [
        "users/room-a1@contoso.example/events",
        "users/room-a2@contoso.example/events",
    ]
    clock.advance(timedelta(days=6).total_seconds())
    code, renewed = run(graph, clock, e, "renew")
    assert code == 0
    assert [r["status"] for r in renewed] == ["renewed", "renewed"]
    code, deleted = run(graph, clock, e, "delete")
    assert code == 0
    assert [r["status"] for r in deleted] == ["deleted", "deleted"]
    assert graph.subscriptions == {}


def test_subscribe_exit_code_when_a_row_fails(tmp_path: Path) -> None:
    clock = FakeClock()
    graph = FakeGraph(clock=clock, denied={"room-a2@contoso.example"})
    rooms = tmp_path / "rooms.txt"
    rooms.write_text("room-a1@contoso.example\nroom-a2@contoso.example\n")
    code, rows = subscribe(graph, clock, env(tmp_path), rooms)
    assert code == 1
    assert [(r["status"], r["error"] is None) for r in rows] == [
        ("created", True),
        ("failed", False),
    ]


def test_check_reports_each_problem(tmp_path: Path) -> None:
    clock = FakeClock()
    graph = FakeGraph(clock=clock, denied={"room-a2@contoso.example"})
    rooms = tmp_path / "rooms.txt"
    rooms.write_text("room-a1@contoso.example\nroom-a2@contoso.example\n")
    code, findings = run(
        graph,
        clock,
        env(tmp_path),
        "check",
        "--mailboxes",
        str(rooms),
        "--notification-url",
        "https://127.0.0.1:9/unreachable",
    )
    assert code == 1
    assert [(f["check"], f["ok"]) for f in findings] == [
        ("credentials", True),
        ("mailbox room-a1@contoso.example", True),
        ("mailbox room-a2@contoso.example", False),
        ("notificationUrl", False),
    ]
    code, findings = run(
        graph,
        clock,
        env(tmp_path, CONNECTOR_CLIENT_SECRET="wrong"),
        "check",
        "--mailboxes",
        str(rooms),
    )
    assert code == 1
    assert findings[0]["ok"] is False
    assert "bad credentials" in findings[0]["detail"]


def test_configuration_errors_are_reported_not_raised(tmp_path: Path, capsys: Any) -> None:
    assert main(["list"], env={"CONNECTOR_TENANT_ID": TENANT_ID}) == 2
    assert "CONNECTOR_CLIENT_ID" in capsys.readouterr().err
    bad = env(tmp_path, CONNECTOR_WEBHOOK_SECRET="plain-text")
    assert main(["list"], env=bad) == 2


def test_read_mailboxes_ignores_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "rooms.txt"
    path.write_text("a@x\n  # note\n\nb@x, \n")
    assert read_mailboxes(str(path)) == ["a@x", "b@x"]


def subscribed(tmp_path: Path, clock: FakeClock, graph: FakeGraph) -> dict[str, str]:
    rooms = tmp_path / "rooms.txt"
    rooms.write_text("room-a1@contoso.example\nroom-a2@contoso.example\n")
    e = env(tmp_path)
    code, _ = subscribe(graph, clock, e, rooms)
    assert code == 0
    return e


def test_json_is_taken_after_the_command_too(tmp_path: Path) -> None:
    clock = FakeClock()
    graph = FakeGraph(clock=clock)
    e = subscribed(tmp_path, clock, graph)
    code, text = run_text(graph, clock, e, "list", "--json")
    assert code == 0
    assert sorted(s["resource"] for s in json.loads(text)) == [
        "users/room-a1@contoso.example/events",
        "users/room-a2@contoso.example/events",
    ]
    code, table = run_text(graph, clock, e, "list")
    assert table.splitlines()[0].split() == [
        "id",
        "resource",
        "expirationDateTime",
        "notificationUrl",
        "lifecycleNotificationUrl",
    ]


def test_a_failed_check_reads_false_in_the_table(tmp_path: Path) -> None:
    clock = FakeClock()
    graph = FakeGraph(clock=clock, denied={"room-a2@contoso.example"})
    rooms = tmp_path / "rooms.txt"
    rooms.write_text("room-a1@contoso.example\nroom-a2@contoso.example\n")
    code, table = run_text(graph, clock, env(tmp_path), "check", "--mailboxes", str(rooms))
    assert code == 1
    rows = [re.split(r"\s{2,}", line) for line in table.splitlines()]
    assert rows[0] == ["check", "ok", "detail"]
    ok = {row[0]: row[1] for row in rows[1:]}
    assert ok == {
        "credentials": "True",
        "mailbox room-a1@contoso.example": "True",
        "mailbox room-a2@contoso.example": "False",
    }, table


def test_help_explains_every_option_without_markup(capsys: Any) -> None:
    for argv in (["--help"], ["check", "--help"], ["register", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "``" not in text
        assert "`" not in text
    main_help = main_parser_help()
    assert "register" in main_help
    check = main_parser_help("check")
    for option in ("--mailboxes", "--notification-url", "--lifecycle-url", "--json"):
        # Each option is followed by its own help text.
        assert option in check
    # Each of the four options has a help text: none is a bare name on its own.
    assert check.count("\n  --") == 4
    assert "--notification-url NOTIFICATION_URL\n                        the URL" in check


def main_parser_help(*command: str) -> str:
    from bookingcache_connector.cli import parser

    top = parser()
    if not command:
        return top.format_help()
    [sub] = [a for a in top._actions if a.dest == "command"]
    return sub.choices[command[0]].format_help()  # type: ignore[attr-defined]


def test_register_prints_the_registration_of_the_subscriptions_made(tmp_path: Path) -> None:
    clock = FakeClock()
    graph = FakeGraph(clock=clock)
    e = subscribed(tmp_path, clock, graph)
    code, text = run_text(
        graph, clock, e, "register", "--notification-url", URL, "--client-state", "s3cret"
    )
    assert code == 0, text
    printed = json.loads(text)
    assert printed["clientState"] == "s3cret"
    by_mailbox = {row["mailbox"]: row for row in printed["subscriptions"]}
    assert sorted(by_mailbox) == ["room-a1@contoso.example", "room-a2@contoso.example"]
    live = {sub["id"]: sub for sub in graph.subscriptions.values()}
    for row in by_mailbox.values():
        assert set(row) == {"id", "mailbox", "expirationDateTime"}
        assert row["expirationDateTime"] == live[row["id"]]["expirationDateTime"]
    # Subscriptions for another URL are not this service's: with none left, nothing to give.
    code, text = run_text(
        graph,
        clock,
        e,
        "register",
        "--notification-url",
        "https://elsewhere.example/graph/notifications",
        "--client-state",
        "s3cret",
    )
    assert (code, text) == (1, "")
    # Sending needs the service's settings.
    code, _ = run_text(
        graph, clock, e, "register", "--notification-url", URL, "--client-state", "s", "--send"
    )
    assert code == 2


def _healthz_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        status = 200 if scope["path"] == "/healthz" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def test_healthcheck_asks_the_port_of_the_environment_on_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with ServerThread(_healthz_app()) as server:
        here = {"CONNECTOR_HOST": "0.0.0.0", "CONNECTOR_PORT": str(server.port)}
        assert main(["healthcheck"], env=here) == 0
        assert main(["healthcheck", "--port", str(server.port)], env={}) == 0
    assert main(["healthcheck"], env=here) == 1  # nothing listens any more
    assert "healthz" in capsys.readouterr().err
    assert main(["healthcheck"], env={"CONNECTOR_PORT": "eighty"}) == 2
    assert "CONNECTOR_PORT" in capsys.readouterr().err


def test_serve_refuses_a_port_that_is_no_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve"], env=env(tmp_path, CONNECTOR_PORT="99999")) == 2
    assert "CONNECTOR_PORT" in capsys.readouterr().err
