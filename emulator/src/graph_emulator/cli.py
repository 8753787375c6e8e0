"""``graph-emulator``: serve the emulator and print one JSON line describing it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from graph_emulator.config import EmulatorConfig
from graph_emulator.seed import add_default_apps, seed_demo, seed_file
from graph_emulator.server import TlsFiles, make_server, startup_info
from graph_emulator.state import new_state


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="graph-emulator", description="A local Microsoft Graph for bookingcache."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", default="demo", help="'demo', 'live', 'empty' or a JSON file")
    parser.add_argument("--seed-number", type=int, default=1, help="makes the demo differ")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed)")
    parser.add_argument("--tls-dir", type=Path, default=None)
    parser.add_argument("--allow-http-notifications", action="store_true")
    parser.add_argument("--virtual-clock", action="store_true")
    parser.add_argument("--token-lifetime-s", type=int, default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="per mailbox request")
    parser.add_argument("--working-elsewhere-digit", choices=("0", "4"), default="0")
    parser.add_argument("--client-state-max", type=int, default=128)
    return parser.parse_args(argv)


def _stop_before_serving(sig: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Until the server takes them over, SIGTERM and Ctrl-C end the start-up quietly (and the
    # ``finally`` below still removes the certificate).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_before_serving)
    config = EmulatorConfig(
        token_lifetime_s=args.token_lifetime_s,
        allow_http_notifications=args.allow_http_notifications,
        virtual_clock=args.virtual_clock,
        mailbox_latency_s=args.latency_ms / 1000,
        schedule_working_elsewhere_digit=args.working_elsewhere_digit,
        client_state_max_length=args.client_state_max,
    )
    state = new_state(config, seed=args.seed_number)
    if args.seed in ("demo", "live"):
        apps = seed_demo(state, around_now=args.seed == "live")
    elif args.seed == "empty":
        apps = add_default_apps(state, scope=[])
    else:
        path = Path(args.seed)
        if not path.is_file():
            print(f"graph-emulator: no seed file at {path}", file=sys.stderr)
            return 2
        try:
            apps = seed_file(state, path)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"graph-emulator: bad seed file {path}: {exc}", file=sys.stderr)
            return 2
    tls: TlsFiles | None = None
    # The certificate's private key never outlives the run, however it ends (SIGTERM, Ctrl-C,
    # a failure to listen); only SIGKILL leaves it behind.
    try:
        if args.tls:
            tls = TlsFiles.prepare(args.tls_dir)
        try:
            server, sock, listening = make_server(
                state, host=args.host, port=args.port, tls_dir=tls.directory if tls else None
            )
        except OSError as exc:
            print(
                f"graph-emulator: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 2
        print(json.dumps(startup_info(state, listening, apps)), flush=True)
        # uvicorn picks the fastest loop available (uvloop when installed). SIGTERM and
        # SIGINT shut it down gracefully and ``run`` returns.
        server.run(sockets=[sock])
        return 0
    finally:
        if tls is not None:
            tls.remove()


if __name__ == "__main__":
    raise SystemExit(main())
