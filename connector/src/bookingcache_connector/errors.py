"""The connector's one exception tree.

ConnectorError
├── ConfigError          settings missing or malformed (raised at start-up, never mid-request)
├── BadRequest           a caller sent something we cannot act on (-> 400 problem+json)
├── SignatureError       unsigned, stale, replayed or wrongly signed call (-> 401 problem+json)
├── AuthError            MSAL could not get a Graph token (bad credentials, unknown tenant)
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
    pass
