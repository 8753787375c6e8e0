"""The baseline of ``bookingcache bench availability``'s single-room reads: a bare Starlette
handler on the same route that answers a JSON body kept in memory, of the size the service's
answers have, served by one uvicorn process with the same settings as ``bookingcache serve``.
What the service spends beyond it is routing, authentication, the read model and the answer.
Run as ``python -m bookingcache.tools.bench.availability_baseline --body-bytes N``; prints the
same ``listening on`` line as the service."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookingcache.bootstrap import event_loop_runner
from bookingcache.tools.bench.intake_baseline import serve_bare


def cached_body(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least the 12 of an empty padding)."""
    padding = max(0, size - len(json.dumps({"pad": ""}, separators=(",", ":"))))
    return json.dumps({"pad": "x" * padding}, separators=(",", ":")).encode()


def baseline_app(body: bytes) -> Starlette:
    async def availability(request: Request) -> Response:
        return Response(content=body, media_type="application/json")

    return Starlette(routes=[Route("/v1/tenants/{tenant}/rooms/{room}/availability", availability)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bookingcache.tools.bench.availability_baseline"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--body-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    # The same event loop as ``bookingcache serve``: same process settings.
    with event_loop_runner() as runner:
        runner.run(serve_bare(baseline_app(cached_body(args.body_bytes)), args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
