"""Alternative 1: Graph's change and lifecycle notifications
(<https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks>,
<https://learn.microsoft.com/en-us/graph/change-notifications-lifecycle-events>).

A POST body is a ``changeNotificationCollection``: ``{"value": [...]}`` whose items name a
subscription, carry its ``clientState`` and either a ``changeType`` or a ``lifecycleEvent``
(one batch may mix both, and several subscriptions). Each item is judged on its own:

- accepted when the subscription is one the service recorded for this URL's tenant and the
  ``clientState`` matches one of the tenant's valid secrets (constant-time comparison);
- otherwise acknowledged with the rest but ignored, and counted: an unknown subscription, one
  of another tenant, a wrong ``clientState``, a lifecycle event this service does not know.

An unknown subscription whose ``clientState`` is one of the tenant's secrets is authentic: Graph
holds a subscription of this tenant the service has lost track of, and the batch asks for a
converge (``Classified.unknown_authentic``). One with a wrong or missing ``clientState`` is only
counted (``unknown_subscription_wrong_client_state``): a stranger who guesses URLs cannot make
the service call the tenant's connector.

A body that is not such a collection is refused as a whole (400), so nothing of it is stored.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.errors import MalformedBody
from bookingcache.intake.directory import IntakeDirectory
from bookingcache.intake.fields import (
    ChangeType,
    ClientState,
    EventName,
    Resource,
    ShortText,
    SubscriptionId,
)

MAX_NOTIFICATIONS = 10_000

_LIFECYCLE = {
    "missed": NotificationKind.MISSED,
    "subscriptionRemoved": NotificationKind.SUBSCRIPTION_REMOVED,
    "reauthorizationRequired": NotificationKind.REAUTHORIZATION_REQUIRED,
}


class Ignored(StrEnum):
    UNKNOWN_SUBSCRIPTION = "unknown_subscription"
    UNKNOWN_SUBSCRIPTION_WRONG_CLIENT_STATE = "unknown_subscription_wrong_client_state"
    OTHER_TENANT = "other_tenant"
    WRONG_CLIENT_STATE = "wrong_client_state"
    UNKNOWN_LIFECYCLE_EVENT = "unknown_lifecycle_event"


class GraphNotification(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: SubscriptionId = Field(alias="subscriptionId")
    client_state: ClientState | None = Field(default=None, alias="clientState")
    change_type: ChangeType | None = Field(default=None, alias="changeType")
    lifecycle_event: EventName | None = Field(default=None, alias="lifecycleEvent")
    resource: Resource | None = None
    id: ShortText | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.change_type is None) == (self.lifecycle_event is None):
            raise ValueError("a notification has either a changeType or a lifecycleEvent")
        return self


class GraphBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: list[GraphNotification] = Field(max_length=MAX_NOTIFICATIONS)


def parse_batch(body: bytes) -> GraphBatch:
    """The collection in ``body``; ``MalformedBody`` saying why not."""
    try:
        return GraphBatch.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedBody(describe(exc)) from exc


def describe(exc: ValidationError, *, limit: int = 5) -> str:
    problems = exc.errors(include_url=False, include_input=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return "the body is not valid JSON"
    parts = []
    for problem in problems[:limit]:
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


@dataclass(slots=True)
class Classified:
    accepted: list[InboxItem] = field(default_factory=list)
    # A plain dict: nearly every batch ignores nothing, and an empty Counter per request
    # costs ten times an empty dict.
    ignored: dict[Ignored, int] = field(default_factory=dict)
    # Notifications of unknown subscriptions that carried one of the tenant's clientStates.
    unknown_authentic: int = 0

    def ignore(self, reason: Ignored) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1


def _matches(offered: str | None, secrets: Sequence[str]) -> bool:
    if offered is None:
        return False
    given = offered.encode()
    matched = False
    for secret in secrets:  # no early exit: timing says nothing about which one matched
        matched |= hmac.compare_digest(given, secret.encode())
    return matched


def _payload(note: GraphNotification) -> dict[str, Any] | None:
    payload: dict[str, Any] = {}
    if note.resource is not None:
        payload["resource"] = note.resource
    if note.id is not None:
        payload["id"] = note.id
    return payload or None


async def classify(batch: GraphBatch, *, tenant_id: str, directory: IntakeDirectory) -> Classified:
    """Split a batch posted to ``tenant_id``'s URL into inbox items and counted rejects."""
    result = Classified()
    notes = batch.value
    if not notes:
        return result
    owners = await directory.owners({note.subscription_id for note in notes})
    secrets: list[str] | None = None
    refreshed = False
    accepted = result.accepted

    async def authentic(offered: str | None) -> bool:
        nonlocal secrets, refreshed
        if secrets is None:
            secrets = await directory.client_states(tenant_id)
        if _matches(offered, secrets):
            return True
        if not refreshed:
            refreshed = True
            secrets = await directory.client_states(tenant_id, fresh=True)
            return _matches(offered, secrets)
        return False

    for note in notes:
        owner = owners.get(note.subscription_id)
        if owner is None:
            if await authentic(note.client_state):
                result.ignore(Ignored.UNKNOWN_SUBSCRIPTION)
                result.unknown_authentic += 1
            else:
                result.ignore(Ignored.UNKNOWN_SUBSCRIPTION_WRONG_CLIENT_STATE)
            continue
        if owner.tenant_id != tenant_id:
            result.ignore(Ignored.OTHER_TENANT)
            continue
        if not await authentic(note.client_state):
            result.ignore(Ignored.WRONG_CLIENT_STATE)
            continue
        if note.lifecycle_event is None:
            accepted.append(
                InboxItem(
                    tenant_id,
                    owner.mailbox,
                    NotificationKind.CHANGE,
                    "alt1",
                    note.subscription_id,
                    note.change_type,
                    _payload(note),
                )
            )
            continue
        kind = _LIFECYCLE.get(note.lifecycle_event)
        if kind is None:
            result.ignore(Ignored.UNKNOWN_LIFECYCLE_EVENT)
            continue
        accepted.append(InboxItem(tenant_id, owner.mailbox, kind, "alt1", note.subscription_id))
    return result
