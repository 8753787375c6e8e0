"""The admin token every test app runs with, and its header."""

from __future__ import annotations

ADMIN_TOKEN = "admin-token-for-the-service-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
