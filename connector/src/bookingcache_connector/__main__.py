"""``python -m bookingcache_connector``: the ``bookingcache-connector`` command."""

from .cli import main

raise SystemExit(main())
