"""Text fields of incoming payloads. A NUL character is refused at the edge: PostgreSQL cannot
hold it in text or JSON, so letting it through would turn bad input into a failed commit."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = AfterValidator(_no_nul)

SubscriptionId = Annotated[str, StringConstraints(min_length=1, max_length=200), Text]
ChangeType = Annotated[str, StringConstraints(min_length=1, max_length=32), Text]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=64), Text]
Mailbox = Annotated[str, StringConstraints(min_length=1, max_length=320), Text]
ClientState = Annotated[str, StringConstraints(max_length=1024), Text]
Resource = Annotated[str, StringConstraints(max_length=4096), Text]
ShortText = Annotated[str, StringConstraints(max_length=256), Text]
