"""Server-side sync state for ``calendarView/delta``, as Exchange keeps it.

A delta round pages with ``$skiptoken`` and ends with a ``$deltatoken``. Both tokens decode to
their mailbox, window and the id of a sync state held here; the state records which instances
(id -> changeKey) the client has seen, so the next round returns only what changed since and
``@removed`` entries for what vanished. States expire after a configurable lifetime, are evicted
beyond a capacity (Exchange's cache is size-bound) and can be invalidated on demand; an unknown
state answers ``410 Gone`` with ``SyncStateNotFound``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graph_emulator.clock import Clock
from graph_emulator.config import EmulatorConfig
from graph_emulator.errors import GraphError


def sync_state_not_found() -> GraphError:
    return GraphError(
        410, "SyncStateNotFound", "The sync state generation is not found. Please re-sync."
    )


@dataclass
class SyncState:
    mailbox_id: str
    start: dt.datetime
    end: dt.datetime
    created: float
    # What the client holds once it has read every page of the round.
    seen: dict[str, str]
    # Pages not yet handed out (for skip tokens), grouped so a series stays on one page.
    pending: list[list[dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class TokenInfo:
    kind: str
    state_id: str
    mailbox_id: str
    start: dt.datetime
    end: dt.datetime


def encode_token(kind: str, state_id: str, state: SyncState) -> str:
    payload = {
        "k": kind,
        "s": state_id,
        "m": state.mailbox_id,
        "from": state.start.isoformat(),
        "to": state.end.isoformat(),
    }
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> TokenInfo:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return TokenInfo(
            kind=str(payload["k"]),
            state_id=str(payload["s"]),
            mailbox_id=str(payload["m"]),
            start=dt.datetime.fromisoformat(payload["from"]),
            end=dt.datetime.fromisoformat(payload["to"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise sync_state_not_found() from exc


class DeltaStore:
    def __init__(self, *, config: EmulatorConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._states: OrderedDict[str, SyncState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def save(self, state: SyncState) -> str:
        state_id = uuid.uuid4().hex
        self._states[state_id] = state
        while len(self._states) > self._config.delta_sync_state_capacity:
            self._states.popitem(last=False)
        return state_id

    def load(self, state_id: str, *, mailbox_id: str) -> SyncState:
        state = self._states.get(state_id)
        if state is None or state.mailbox_id != mailbox_id:
            raise sync_state_not_found()
        if self._clock.monotonic() - state.created > self._config.delta_token_lifetime_s:
            del self._states[state_id]
            raise sync_state_not_found()
        return state

    def discard(self, state_id: str) -> None:
        self._states.pop(state_id, None)

    def expire(self, *, mailbox_id: str | None = None) -> int:
        """Invalidate every delta and skip token (of one mailbox); returns how many."""
        doomed = [
            key
            for key, state in self._states.items()
            if mailbox_id is None or state.mailbox_id == mailbox_id
        ]
        for key in doomed:
            del self._states[key]
        return len(doomed)
