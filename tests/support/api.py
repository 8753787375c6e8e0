"""Request bodies of the management API as the tests send them."""

from __future__ import annotations

from typing import Any


def tenant_body(tenant_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": tenant_id,
        "name": "Contoso",
        "event_source": "connector",
        "connector_url": "https://connector.contoso.example",
        "default_time_zone": "Europe/Berlin",
    }
    body.update(overrides)
    return body
