"""The graph-emulator command: one JSON start-up line, real HTTPS, demo and file seeds."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_emulator.clock import Clock
from graph_emulator.seed import seed_demo, seed_file
from graph_emulator.state import EmulatorState, new_state

pytestmark = pytest.mark.slow
NOON = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)  # a Wednesday


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> dict[str, Any]:
        process = subprocess.Popen(
            [sys.executable, "-m", "graph_emulator.cli", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        info: dict[str, Any] = json.loads(line)
        return info

    yield run
    for process in started:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_tls_demo_start_line_and_a_real_request(run_cli: Any, tmp_path: Path) -> None:
    info = run_cli("--seed", "demo", "--tls", "--tls-dir", str(tmp_path / "tls"))
    assert info["base_url"].startswith("https://127.0.0.1:")
    assert info["base_url"].endswith("/v1.0")
    assert info["authority"].endswith("/" + info["tenant_id"])
    assert Path(info["cert_path"]).is_file()
    assert len(info["mailboxes"]) >= 24
    assert len({m["building"] for m in info["mailboxes"]}) == 2
    assert set(info["apps"]) == {"full", "readbasic", "scoped"}
    context = ssl.create_default_context(cafile=info["cert_path"])
    with httpx.Client(verify=context) as client:
        token = client.post(
            info["authority"] + "/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()["access_token"]
        room = info["mailboxes"][0]
        calendar = client.get(
            info["base_url"] + f"/users/{room['upn']}/calendar",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert calendar.status_code == 200
    assert calendar.json()["owner"]["address"] == room["upn"]


def test_a_missing_seed_file_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "graph_emulator.cli", "--seed", "/nonexistent.json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "no seed file" in result.stderr


def test_demo_is_deterministic_per_seed_number() -> None:
    # The demo's meetings follow the emulator's clock: the same instant for every tenant here.
    def at_noon(seed: int) -> EmulatorState:
        return new_state(seed=seed, clock=Clock(virtual=True, start=NOON))

    def fingerprint(seed: int) -> list[tuple[str, int]]:
        state = at_noon(seed)
        seed_demo(state)
        return [(r.upn, len(state.calendars.items(r))) for r in state.directory.rooms()]

    assert fingerprint(5) == fingerprint(5)
    assert fingerprint(5) != fingerprint(6)
    state = at_noon(5)
    seed_demo(state)
    kinds = {e.kind for r in state.directory.rooms() for e in state.calendars.items(r)}
    assert kinds == {"singleInstance", "seriesMaster"}


def test_json_seed_file(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(
        json.dumps(
            {
                "mailboxes": [
                    {
                        "upn": "room-x@contoso.example",
                        "display_name": "Room X",
                        "is_room": True,
                        "time_zone": "Europe/Oslo",
                    },
                    {"upn": "ola@contoso.example", "display_name": "Ola Hansen"},
                ],
                "apps": [
                    {
                        "name": "reader",
                        "client_id": "11111111-2222-4333-8444-555555555555",
                        "client_secret": "s3cret",
                        "roles": ["Calendars.Read"],
                        "mailbox_scope": ["room-x@contoso.example"],
                    }
                ],
                "events": [
                    {
                        "mailbox": "room-x@contoso.example",
                        "organizer": "ola@contoso.example",
                        "event": {
                            "subject": "Sync",
                            "start": {"dateTime": "2026-03-17T09:00:00", "timeZone": "UTC"},
                            "end": {"dateTime": "2026-03-17T10:00:00", "timeZone": "UTC"},
                        },
                    }
                ],
            }
        )
    )
    state = new_state(seed=1)
    apps = seed_file(state, path)
    room = state.directory.resolve("room-x@contoso.example")
    assert apps["reader"].mailbox_scope == {room.id}
    (event,) = state.calendars.list_events(room.id)
    assert event["subject"] == "Ola Hansen"


async def test_served_connections_send_without_nagle_delay() -> None:
    import asyncio
    import socket

    from graph_emulator.server import bind

    sock = bind("127.0.0.1", 0)
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = writer.get_extra_info("socket")
        seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await reader.read()
        writer.close()
        await writer.wait_closed()
    assert seen
    assert seen[0] != 0
