"""The admin token every test app runs with, and its header; any token's header."""

from __future__ import annotations

ADMIN_TOKEN = "admin-token-for-the-service-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
