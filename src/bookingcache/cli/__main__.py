"""``python -m bookingcache.cli``: the ``bookingcache`` command."""

from bookingcache.cli import main

raise SystemExit(main())
