"""A room calendar's Graph subscription as the customer's connector reports it, and what a
lifecycle notification asks to be done with it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# A connector row's status (connector/openapi.yaml); ``failed`` carries an error.
FAILED = "failed"
DELETED = "deleted"
# Statuses of a subscription the service has not heard from before.
NEW = frozenset({"created", "recreated", "adopted"})

# What a lifecycle notification (reauthorizationRequired, subscriptionRemoved) marked a
# subscription for.
NO_ACTION = "none"
RENEW = "renew"
RECREATE = "recreate"


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
