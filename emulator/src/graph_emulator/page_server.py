"""A server of one calendarView delta page, for measuring what a Graph client spends per request
(``bookingcache bench graph-client``): one uvicorn process over TLS answering every request with
the same page (ten events in Graph's shape with ``Prefer: outlook.timezone``, a deltaLink),
so that nearly all the work is the client's. Run as ``python -m graph_emulator.page_server
--tls-dir D``: it writes the emulator's self-signed certificate into ``D`` and prints
``graph pages listening on https://HOST:PORT``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from starlette.types import Receive, Scope, Send

from graph_emulator.server import bind
from graph_emulator.tls import write_self_signed

EVENTS = 10


def delta_page(base_url: str) -> bytes:
    """A page of calendarView delta as Graph answers it with ``Prefer: outlook.timezone``."""
    events = []
    for n in range(EVENTS):
        start = dt.datetime(2026, 12, 7, 8, tzinfo=dt.UTC) + dt.timedelta(hours=n)
        events.append(
            {
                "@odata.etag": f'W/"DwAAABYAAAB{n:04d}"',
                "id": f"AAMkAGI2TG93AAA{n:020d}=",
                "subject": f"Planning meeting {n}",
                "isAllDay": False,
                "isCancelled": False,
                "showAs": "busy",
                "sensitivity": "normal",
                "type": "singleInstance",
                "start": {
                    "dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                    "timeZone": "UTC",
                },
                "end": {
                    "dateTime": (start + dt.timedelta(minutes=45)).strftime(
                        "%Y-%m-%dT%H:%M:%S.0000000"
                    ),
                    "timeZone": "UTC",
                },
                "organizer": {"emailAddress": {"name": "Organizer", "address": "org@contoso.test"}},
            }
        )
    page = {
        "@odata.context": f"{base_url}/v1.0/$metadata#Collection(event)",
        "value": events,
        "@odata.deltaLink": f"{base_url}/v1.0/users/room@contoso.test/calendarView/delta"
        "?$deltatoken=R0usmci39OQxqJrxK4",
    }
    return json.dumps(page).encode()


class PageApp:
    def __init__(self) -> None:
        self.body = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json; odata.metadata=minimal"),
                    (b"content-length", str(len(self.body)).encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


async def _serve(tls_dir: Path, host: str) -> None:
    cert, key = write_self_signed(tls_dir, now=dt.datetime.now(dt.UTC))
    app = PageApp()
    sock = bind(host, 0)
    bound_host, bound_port = sock.getsockname()[:2]
    app.body = delta_page(f"https://{bound_host}:{bound_port}")
    config = uvicorn.Config(
        app,
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    print(f"graph pages listening on https://{bound_host}:{bound_port}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graph_emulator.page_server")
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.tls_dir, args.host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
