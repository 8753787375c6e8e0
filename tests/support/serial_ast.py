"""``ast.parse`` one thread at a time, in the test process.

CPython 3.11 keeps the depth counter of its AST-to-object conversion in the ``ast`` module's
shared state. When two threads parse at once (a garbage collection in the middle of one
conversion can run Python code, and so hand the interpreter to the other thread), the counter
goes wrong and ``ast.parse`` raises ``SystemError: AST constructor recursion depth mismatch``
(python/cpython#106905 and pytest-dev/pytest#10763).

The tests meet it through pytest's assertion rewriting, which parses the modules of every
pytest plugin's distribution (Schemathesis, AnyIO, Hypothesis) when they are first imported:
the Schemathesis run imports its modules lazily on the test's thread while the service under
test starts on the ASGI portal's thread and imports AnyIO's. Serialising the parses here takes
nothing from what the tests check; the service itself never parses Python.
"""

from __future__ import annotations

import ast
import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_parse = ast.parse


@functools.wraps(_parse)
def _serial_parse(*args: Any, **kwargs: Any) -> Any:
    with _LOCK:
        return _parse(*args, **kwargs)


def install() -> None:
    """Make every later ``ast.parse`` take the lock (once; calling again changes nothing)."""
    if ast.parse is not _serial_parse:
        ast.parse = _serial_parse
