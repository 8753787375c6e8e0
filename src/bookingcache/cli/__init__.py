"""The ``bookingcache`` command. Each subcommand is a function (often in its own module) that
takes the parsed arguments; adding one means adding an entry to ``_COMMANDS``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from bookingcache.errors import BookingCacheError


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    passthrough: bool = False
    """The subcommand parses its own arguments: everything after its name goes to it as-is."""


def _add_database(
    parser: argparse.ArgumentParser, *, data_dir: str = "where the SQLite database lives"
) -> None:
    parser.add_argument("--data-dir", help=data_dir)
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://...")


def _add_instance_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance-id",
        help="this process's stable identity in the cluster (BOOKINGCACHE_INSTANCE_ID): "
        "started again under it, it takes its previous claims and duties back at once",
    )


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0: any free)")
    _add_database(parser, data_dir="where the SQLite database and admin token live")
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="intake and API only; run `bookingcache worker` elsewhere to refresh calendars",
    )
    _add_instance_id(parser)


def _run_serve(args: argparse.Namespace) -> int:
    from bookingcache.cli.serve import serve

    return serve(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        database_url=args.database_url,
        run_worker=not args.no_worker,
        instance_id=args.instance_id,
    )


def _configure_worker(parser: argparse.ArgumentParser) -> None:
    _add_database(parser)
    parser.add_argument("--host", help="address of the metrics port (default 127.0.0.1)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve /healthz, /readyz and /metrics on this port (default: no HTTP; 0: any free)",
    )
    _add_instance_id(parser)


def _run_worker(args: argparse.Namespace) -> int:
    from bookingcache.cli.worker import run_worker

    return run_worker(
        data_dir=args.data_dir,
        database_url=args.database_url,
        host=args.host,
        metrics_port=args.metrics_port,
        instance_id=args.instance_id,
    )


def _configure_migrate(parser: argparse.ArgumentParser) -> None:
    _add_database(parser)


def _run_migrate(args: argparse.Namespace) -> int:
    from bookingcache.cli.migrate import run_migrate

    return run_migrate(data_dir=args.data_dir, database_url=args.database_url)


def _configure_healthcheck(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to ask (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to ask (default 8080)")
    parser.add_argument("--path", default="/readyz", help="path to ask (default /readyz)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)"
    )


def _run_healthcheck(args: argparse.Namespace) -> int:
    from bookingcache.cli.healthcheck import run_healthcheck

    return run_healthcheck(host=args.host, port=args.port, path=args.path, timeout_s=args.timeout)


def _configure_passthrough(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the subcommand")


def _run_bench(args: argparse.Namespace) -> int:
    from bookingcache.tools import bench

    return bench.main(list(args.args))


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alternative",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: Graph notifies the service (default); 2: Graph notifies the connector's relay",
    )
    parser.add_argument("--port", type=int, default=8080, help="service port (0: any free)")
    parser.add_argument("--data-dir", help="keep the demo's files here (default: a temp dir)")
    parser.add_argument(
        "--rate", type=float, default=0.5, help="simulated bookings per second (default 0.5)"
    )


def _run_demo(args: argparse.Namespace) -> int:
    from bookingcache.tools.demo import run_demo

    return run_demo(
        alternative=args.alternative,
        port=args.port,
        data_dir=args.data_dir,
        rate_per_s=args.rate,
    )


def _configure_admin(parser: argparse.ArgumentParser) -> None:
    from bookingcache.cli import admin

    admin.configure(parser)


def _run_admin(args: argparse.Namespace) -> int:
    from bookingcache.cli import admin

    return admin.run(args)


_COMMANDS: dict[str, Command] = {
    "serve": Command("run the service (API and background work)", _configure_serve, _run_serve),
    "worker": Command(
        "run only the sync worker and reconciliation sweep", _configure_worker, _run_worker
    ),
    "migrate": Command(
        "bring the database to the newest schema, then exit", _configure_migrate, _run_migrate
    ),
    "healthcheck": Command(
        "exit 0 if the service (or a worker's metrics port) at --host:--port is ready",
        _configure_healthcheck,
        _run_healthcheck,
    ),
    "demo": Command(
        "start the emulator, the connector and the service with rooms linked (one command)",
        _configure_demo,
        _run_demo,
    ),
    "admin": Command(
        "operator's commands: secrets keys, read tokens, signing secrets, audit log",
        _configure_admin,
        _run_admin,
    ),
    "bench": Command(
        "run a benchmark (see docs/benchmarks.md)",
        _configure_passthrough,
        _run_bench,
        passthrough=True,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bookingcache", description="Booking cache for meeting-room availability."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in _COMMANDS and _COMMANDS[arguments[0]].passthrough:
        args = argparse.Namespace(command=arguments[0], args=arguments[1:])
    else:
        args = build_parser().parse_args(arguments)
    try:
        return _COMMANDS[args.command].run(args)
    except ValidationError as exc:
        print(f"bookingcache: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except BookingCacheError as exc:
        print(f"bookingcache: {exc}", file=sys.stderr)
        return 1
