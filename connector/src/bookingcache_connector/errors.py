"""The connector's one exception tree.

ConnectorError
├── ConfigError          settings missing or malformed (raised at start-up, never mid-request)
├── BadRequest           a caller sent something we cannot act on (-> 400 problem+json)
├── SignatureError       unsigned, stale, replayed or wrongly signed call (-> 401 problem+json)
├── AuthError            no Graph token: bad credentials, unknown tenant, or the token
│                        endpoint failed (5xx, ``temporarily_unavailable``, a timeout)
├── GraphError           Graph answered with an error status (status, code, message)
└── DeliveryError        the service did not accept a relayed notification
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    pass


class BadRequest(ConnectorError):
    pass


class SignatureError(ConnectorError):
    pass


class AuthError(ConnectorError):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class GraphError(ConnectorError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Graph answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class DeliveryError(ConnectorError):
    """``status`` is the service's answer, None when it could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
