"""The customer-run connector: Graph subscriptions, relay and basic events."""
