"""Type of the per-request hooks fault injection installs on the state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

# (app id, mailbox id) -> awaitable; raise GraphError to answer the request with it.
MailboxRequestHook = Callable[[str, str], Awaitable[None]]
