"""A room calendar's Graph subscription as the customer's connector reports it (or the customer
registers it), and what a lifecycle notification asks to be done with it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# A connector row's status (connector/openapi.yaml); ``failed`` carries an error.
FAILED = "failed"
DELETED = "deleted"
# Statuses of a subscription the service has not heard from before.
NEW = frozenset({"created", "recreated", "adopted"})

# A subscription the customer made itself (``bookingcache-connector subscribe``) and registered.
REGISTERED = "registered"

# What a lifecycle notification (reauthorizationRequired, subscriptionRemoved) marked a
# subscription for.
NO_ACTION = "none"
RENEW = "renew"
RECREATE = "recreate"


@dataclass(frozen=True, slots=True)
class Mark:
    """A subscription's lifecycle mark as read: what it asks for (``RENEW`` or ``RECREATE``)
    and the row's ``updated_at`` then, which tells whether it changed since."""

    action: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class ConvergedSubscription:
    """The connector's answer for one mailbox of the desired set."""

    mailbox: str
    subscription_id: str | None
    expires_at: dt.datetime | None
    status: str
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED


@dataclass(frozen=True, slots=True)
class RegisteredSubscription:
    """A subscription the customer made without a running connector, as it registers it."""

    mailbox: str
    subscription_id: str
    expires_at: dt.datetime
