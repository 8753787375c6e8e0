"""The baseline of ``bookingcache bench intake``: a bare Starlette handler that only parses the
JSON body and answers 202, served by one uvicorn process with the same settings as
``bookingcache serve``. Run as ``python -m bookingcache.tools.bench.intake_baseline``; prints
the same ``listening on`` line as the service."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookingcache.api.server import server_config
from bookingcache.bootstrap import event_loop_runner
from bookingcache.settings import Settings


async def _notifications(request: Request) -> Response:
    json.loads(await request.body())
    return Response(status_code=202)


def baseline_app() -> Starlette:
    return Starlette(
        routes=[Route("/graph/notifications/{tenant}", _notifications, methods=["POST"])]
    )


async def serve_bare(app: Starlette, host: str, port: int) -> None:
    """Serve ``app`` as ``bookingcache serve`` serves the service (the same server settings),
    and print the same ``listening on`` line once it listens."""
    config = server_config(app, Settings(), host=host, port=port, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
    print(f"baseline listening on http://{bound_host}:{bound_port}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bookingcache.tools.bench.intake_baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # The same event loop as ``bookingcache serve``: same process settings.
    with event_loop_runner() as runner:
        runner.run(serve_bare(baseline_app(), args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
