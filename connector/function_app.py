"""Azure Functions entry point (Python v2 programming model).

The Functions host imports this file from the app folder and looks for ``app``; the connector
behind it is built on the first invocation from the app settings (``CONNECTOR_*``), see
README.md. In a package made by ``scripts/package-connector`` the connector is installed from
its bundled wheel; run from the source folder (``func start`` in ``connector/``), it is taken
from ``src/`` next to this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from bookingcache_connector.functions import build_function_app
except ImportError:
    source = Path(__file__).resolve().parent / "src"
    if not (source / "bookingcache_connector").is_dir():
        raise
    sys.path.insert(0, str(source))
    from bookingcache_connector.functions import build_function_app

app = build_function_app()
