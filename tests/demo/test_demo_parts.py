"""The demo's parts that need no processes: a taken port is refused before anything starts, with
the option to use instead and no temporary directory left; the floor plans it gives the rooms;
what it prints (secrets only in the readable block) and the state file it writes."""

from __future__ import annotations

import json
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bookingcache.tools import demo
from bookingcache.tools.floorplan import floor_plans


def test_a_taken_port_suggests_another_and_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert demo.port_taken(port)
        status = demo.run_demo(port=port)
    assert status == 2
    error = capsys.readouterr().err
    assert f"port {port} is taken" in error
    assert f"--port {port + 1}" in error
    assert "--port 0" in error
    assert list(tmp_path.iterdir()) == []
    assert not demo.port_taken(0)


def emulator_rooms() -> dict[str, dict[str, Any]]:
    rooms: dict[str, dict[str, Any]] = {}
    for building, code, per_floor in (("Harbour House", "hh", 5), ("Riverside", "rs", 4)):
        for floor in range(1, 5):
            for n in range(1, per_floor + 1):
                rooms[f"room-{code}-{floor}{n:02d}"] = {
                    "building": building,
                    "floor": str(floor),
                    "capacity": (4, 6, 8, 10, 12, 20)[n % 6],
                }
    rooms["room-lobby"] = {"building": None, "floor": None, "capacity": 3}
    return rooms


def test_every_room_of_a_floor_gets_its_own_shape() -> None:
    rooms = emulator_rooms()
    plans = floor_plans(rooms)
    assert set(plans) == set(rooms) - {"room-lobby"}
    floors: dict[tuple[str, str], list[list[list[float]]]] = {}
    for room_id, shape in plans.items():
        assert shape["type"] == "Polygon"
        [ring] = shape["coordinates"]
        assert ring[0] == ring[-1]
        assert len(ring) == 5
        for lon, lat in ring:
            assert -180 <= lon <= 180
            assert -90 <= lat <= 90
        floors.setdefault((rooms[room_id]["building"], rooms[room_id]["floor"]), []).append(ring)
    for rings in floors.values():
        boxes = [
            (min(p[0] for p in r), min(p[1] for p in r), max(p[0] for p in r), max(p[1] for p in r))
            for r in rings
        ]
        for i, a in enumerate(boxes):
            assert a[0] < a[2]
            assert a[1] < a[3]
            for b in boxes[i + 1 :]:
                apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
                assert apart, (a, b)

    # A room with more seats is wider.
    def width(room_id: str) -> float:
        ring = plans[room_id]["coordinates"][0]
        return max(p[0] for p in ring) - min(p[0] for p in ring)

    assert width("room-hh-105") > width("room-hh-101")  # 20 seats, 6 seats
    # Floors of a building lie on top of each other; buildings stand apart.
    assert plans["room-hh-101"] == plans["room-hh-201"]
    assert plans["room-hh-101"] != plans["room-rs-101"]


def ready_info(tmp_path: Path) -> dict[str, Any]:
    return {
        "service_url": "http://127.0.0.1:8080",
        "admin_token": "admin-" + "a" * 40,
        "tenant": "demo",
        "read_token": "demo." + "r" * 40,
        "signing_secret": "whsec_" + "s" * 40,
        "connector_url": "http://127.0.0.1:9000",
        "emulator_control_url": "https://127.0.0.1:8443/_emulator",
        "emulator_cert": str(tmp_path / "tls" / "cert.pem"),
        "alternative": 1,
        "rooms": [f"room-hh-1{n:02d}" for n in range(1, 6)] * 8,
        "floors": {"Harbour House": ["1", "2", "10"], "Riverside": ["1"]},
        "subscriptions": {"healthy": 40},
        "pids": {"graph-emulator": 10, "service": 11, "connector": 12},
    }


def test_the_secrets_are_printed_only_in_the_readable_block(tmp_path: Path) -> None:
    info = ready_info(tmp_path)
    line = demo.ready_line(info, tmp_path)
    parsed = json.loads(line)
    assert parsed["page_url"] == "http://127.0.0.1:8080/"
    assert parsed["state_file"] == str(tmp_path / "demo.json")
    for secret in ("admin_token", "read_token", "signing_secret"):
        assert info[secret] not in line
    banner = demo.banner(info, tmp_path)
    assert info["read_token"] in banner
    assert info["admin_token"] in banner
    assert info["signing_secret"] not in banner
    assert "live page        http://127.0.0.1:8080/ " in banner
    assert "Harbour House    floors 1, 2, 10" in banner
    assert (
        f"logs             {tmp_path}/ (graph-emulator.log, service.log, connector.log)" in banner
    )
    assert """-d '{"building": "Harbour House", "floor": "1"}'""" in banner
    demo.write_state(info, tmp_path)
    state_file = tmp_path / "demo.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert json.loads(state_file.read_text()) == info
