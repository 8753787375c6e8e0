"""Fault injection: what the control API can make go wrong, on purpose.

Two families:

* notification faults, consulted by the delivery engine for every change notification it is
  handed: drop (a ``missed`` lifecycle event follows), duplicate, reorder, delay, and silencing a
  subscription (nothing is sent and nothing says so, like Graph's silent outages);
* mailbox faults, consulted before every mailbox-scoped Graph request through the state's
  ``mailbox_request_hooks``: a forced ``429`` with ``Retry-After``, a ``503``, or a request that
  hangs and then times out.

Each fault fires either for the next ``count`` matches or, without a count, until cleared; a
``probability`` below 1 makes it fire at random, from a seeded generator so runs repeat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from graph_emulator.clock import Clock
from graph_emulator.counters import Counters
from graph_emulator.errors import GraphError

NotificationFaultKind = Literal["drop", "duplicate", "reorder", "delay"]
MailboxFaultKind = Literal["throttle", "unavailable", "timeout"]
NOTIFICATION_FAULT_KINDS: tuple[NotificationFaultKind, ...] = (
    "drop",
    "duplicate",
    "reorder",
    "delay",
)
MAILBOX_FAULT_KINDS: tuple[MailboxFaultKind, ...] = ("throttle", "unavailable", "timeout")
ALL_MAILBOXES = "*"


@dataclass
class Trigger:
    """Fires for the next ``remaining`` matches (``None``: until cleared) with ``probability``."""

    remaining: int | None = None
    probability: float = 1.0
    fired: int = 0

    def fire(self, rng: random.Random) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def describe(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "probability": self.probability, "fired": self.fired}


@dataclass
class NotificationFault:
    trigger: Trigger
    delay_s: float = 0.0
    subscription_id: str | None = None

    def describe(self) -> dict[str, Any]:
        out = self.trigger.describe()
        if self.delay_s:
            out["delay_s"] = self.delay_s
        if self.subscription_id is not None:
            out["subscription_id"] = self.subscription_id
        return out


@dataclass
class MailboxFault:
    kind: MailboxFaultKind
    trigger: Trigger
    retry_after_s: int = 10
    timeout_s: float = 30.0

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.kind, **self.trigger.describe()}
        if self.kind in ("throttle", "unavailable"):
            out["retry_after_s"] = self.retry_after_s
        if self.kind == "timeout":
            out["timeout_s"] = self.timeout_s
        return out


@dataclass
class FaultRegistry:
    clock: Clock
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311
    notification: dict[NotificationFaultKind, NotificationFault] = field(default_factory=dict)
    mailbox: dict[str, MailboxFault] = field(default_factory=dict)
    silenced: set[str] = field(default_factory=set)
    counters: Counters | None = None

    # -- notification faults ------------------------------------------------------------------

    def set_notification_fault(
        self,
        kind: NotificationFaultKind,
        *,
        count: int | None = None,
        probability: float = 1.0,
        delay_s: float = 0.0,
        subscription_id: str | None = None,
    ) -> NotificationFault:
        fault = NotificationFault(
            trigger=Trigger(remaining=count, probability=probability),
            delay_s=delay_s,
            subscription_id=subscription_id,
        )
        self.notification[kind] = fault
        return fault

    def clear_notification_fault(self, kind: NotificationFaultKind | None = None) -> None:
        if kind is None:
            self.notification.clear()
        else:
            self.notification.pop(kind, None)

    def fires(
        self, kind: NotificationFaultKind, *, subscription_id: str
    ) -> NotificationFault | None:
        """The fault of ``kind`` if it fires for this notification (consuming one count)."""
        fault = self.notification.get(kind)
        if fault is None:
            return None
        if fault.subscription_id is not None and fault.subscription_id != subscription_id:
            return None
        if not fault.trigger.fire(self.rng):
            return None
        if fault.trigger.exhausted:
            del self.notification[kind]
        return fault

    def silence(self, subscription_id: str) -> None:
        self.silenced.add(subscription_id)

    def unsilence(self, subscription_id: str) -> None:
        self.silenced.discard(subscription_id)

    def is_silenced(self, subscription_id: str) -> bool:
        return subscription_id in self.silenced

    # -- mailbox faults -----------------------------------------------------------------------

    def set_mailbox_fault(
        self,
        mailbox_id: str,
        kind: MailboxFaultKind,
        *,
        count: int | None = None,
        probability: float = 1.0,
        retry_after_s: int = 10,
        timeout_s: float = 30.0,
    ) -> MailboxFault:
        fault = MailboxFault(
            kind=kind,
            trigger=Trigger(remaining=count, probability=probability),
            retry_after_s=retry_after_s,
            timeout_s=timeout_s,
        )
        self.mailbox[mailbox_id] = fault
        return fault

    def clear_mailbox_fault(self, mailbox_id: str | None = None) -> None:
        if mailbox_id is None:
            self.mailbox.clear()
        else:
            self.mailbox.pop(mailbox_id, None)

    async def check_mailbox_request(self, app_id: str, mailbox_id: str) -> None:
        """The ``mailbox_request_hooks`` entry: raise (or hang, then raise) when a fault fires."""
        key = mailbox_id if mailbox_id in self.mailbox else ALL_MAILBOXES
        fault = self.mailbox.get(key)
        if fault is None or not fault.trigger.fire(self.rng):
            return
        if fault.trigger.exhausted:
            del self.mailbox[key]
        if fault.kind == "throttle":
            if self.counters is not None:
                self.counters.record_throttled(mailbox_id, app_id)
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                headers={"Retry-After": str(fault.retry_after_s)},
            )
        if fault.kind == "unavailable":
            raise GraphError(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry later.",
                headers={"Retry-After": str(fault.retry_after_s)},
            )
        await self.clock.sleep(fault.timeout_s)
        raise GraphError(504, "GatewayTimeout", "The request timed out.")

    def describe(self) -> dict[str, Any]:
        return {
            "notifications": {k: f.describe() for k, f in self.notification.items()},
            "mailboxes": {m: f.describe() for m, f in self.mailbox.items()},
            "silenced": sorted(self.silenced),
        }
