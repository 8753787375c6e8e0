"""``bookingcache admin``: the operator's shell for what is not a request to one running service.

- ``new-key`` prints a new key for ``BOOKINGCACHE_SECRETS_KEY``.
- ``reseal`` seals every stored secret again with the newest key, so that older keys can be
  dropped from ``BOOKINGCACHE_SECRETS_KEY`` afterwards (docs/api.md, "Secrets at rest").
"""

from __future__ import annotations

import argparse
import asyncio

from bookingcache.bootstrap import reseal_secrets, settings_from_environment
from bookingcache.settings import ensure_secrets_key, new_secrets_key


def configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    commands.add_parser(
        "new-key",
        help="print a new key for BOOKINGCACHE_SECRETS_KEY",
        description="Print a new key for BOOKINGCACHE_SECRETS_KEY (32 random bytes, URL-safe "
        "base64). Put it first in the list, keep the old keys behind it, run `reseal`, then "
        "drop the old keys.",
    )
    reseal = commands.add_parser(
        "reseal",
        help="seal every stored secret again with the first key of BOOKINGCACHE_SECRETS_KEY",
        description="Seal every stored signing secret and clientState again with the first "
        "key of BOOKINGCACHE_SECRETS_KEY; the others must still open them.",
    )
    reseal.add_argument("--data-dir", help="where the SQLite database lives")
    reseal.add_argument("--database-url", help="sqlite:///path or postgresql://...")


def run(args: argparse.Namespace) -> int:
    if args.admin_command == "new-key":
        print(new_secrets_key())
        return 0
    settings = ensure_secrets_key(
        settings_from_environment(data_dir=args.data_dir, database_url=args.database_url)
    )
    count = asyncio.run(reseal_secrets(settings))
    print(f"sealed {count} stored secrets again with the first key")
    return 0
