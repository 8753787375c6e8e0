"""Faults of the identity platform, set through the control API: the token endpoint failing
the way Entra ID does in an incident, and access tokens revoked before they expire.

* ``unavailable``: ``503`` with ``Retry-After`` and Entra's ``temporarily_unavailable`` body
  (``AADSTS90033``, its transient error);
* ``timeout``: the request hangs for ``timeout_s`` (a client's own timeout usually ends it
  first), then ``504``;
* revocation: every token issued so far (to one app, or to all) is refused by Graph with
  ``401 InvalidAuthenticationToken`` from then on, while MSAL still holds it as valid, as after
  an administrator revoked the app's sessions or a continuous access evaluation event. Tokens
  issued later are good.

A token fault fires for the next ``count`` token requests or, without a count, until cleared;
``probability`` below 1 makes it fire at random, from a seeded generator.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import JSONResponse

from graph_emulator.clock import Clock
from graph_emulator.faults import Trigger

TokenFaultKind = Literal["unavailable", "timeout"]
TOKEN_FAULT_KINDS: tuple[TokenFaultKind, ...] = ("unavailable", "timeout")


@dataclass
class TokenFault:
    kind: TokenFaultKind
    trigger: Trigger
    retry_after_s: int = 10
    timeout_s: float = 30.0

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.kind, **self.trigger.describe()}
        if self.kind == "unavailable":
            out["retry_after_s"] = self.retry_after_s
        else:
            out["timeout_s"] = self.timeout_s
        return out


@dataclass
class IdentityFaults:
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311
    token: TokenFault | None = None
    # Tokens still alive: their ``uti`` claim, app and expiry (Unix seconds).
    issued: dict[str, tuple[str, int]] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)

    def set_token_fault(
        self,
        kind: TokenFaultKind,
        *,
        count: int | None = None,
        probability: float = 1.0,
        retry_after_s: int = 10,
        timeout_s: float = 30.0,
    ) -> TokenFault:
        self.token = TokenFault(
            kind=kind,
            trigger=Trigger(remaining=count, probability=probability),
            retry_after_s=retry_after_s,
            timeout_s=timeout_s,
        )
        return self.token

    def clear_token_fault(self) -> None:
        self.token = None

    async def token_request(self, clock: Clock) -> JSONResponse | None:
        """The answer a firing fault gives a token request (after its hang), else None."""
        fault = self.token
        if fault is None or not fault.trigger.fire(self.rng):
            return None
        if fault.trigger.exhausted:
            self.token = None
        now = clock.now()
        trace = str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        if fault.kind == "timeout":
            await clock.sleep(fault.timeout_s)
            return JSONResponse(
                {"error": "server_error", "error_description": "The request timed out."},
                status_code=504,
            )
        return JSONResponse(
            {
                "error": "temporarily_unavailable",
                "error_description": "AADSTS90033: A transient error has occurred. Please try "
                f"again. Trace ID: {trace} Correlation ID: {trace} Timestamp: {stamp}",
                "error_codes": [90033],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": trace,
            },
            status_code=503,
            headers={"Retry-After": str(fault.retry_after_s)},
        )

    # -- revocation -----------------------------------------------------------------------

    def issued_token(self, token_id: str, client_id: str, expires: int, now: dt.datetime) -> None:
        stamp = int(now.timestamp())
        self.issued = {k: v for k, v in self.issued.items() if v[1] > stamp}
        self.revoked = {k: exp for k, exp in self.revoked.items() if exp > stamp}
        self.issued[token_id] = (client_id, expires)

    def revoke(self, client_id: str | None = None) -> int:
        """Revoke every live token (of ``client_id`` when given); how many."""
        chosen = [k for k, (app, _) in self.issued.items() if client_id in (None, app)]
        for token_id in chosen:
            self.revoked[token_id] = self.issued.pop(token_id)[1]
        return len(chosen)

    def is_revoked(self, token_id: object) -> bool:
        return isinstance(token_id, str) and token_id in self.revoked

    def describe(self) -> dict[str, Any] | None:
        return self.token.describe() if self.token is not None else None
