"""Azure Functions entry point (Python v2 programming model).

The Functions host imports this file and looks for ``app``; the connector behind it is built on
the first invocation from the app settings (``CONNECTOR_*``), see README.md.
"""

from __future__ import annotations

from bookingcache_connector.functions import build_function_app

app = build_function_app()
