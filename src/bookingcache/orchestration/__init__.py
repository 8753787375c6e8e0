"""Subscription orchestration: the desired subscription set of each tenant, converged through
its connector, and the health of every calendar's subscription."""
