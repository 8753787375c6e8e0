"""Notification intake: Graph's webhooks (Alternative 1) and the connector's signed relay call
(Alternative 2), both committed to the durable inbox by group commit before they are answered."""
