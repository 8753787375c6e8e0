"""A tenant's way in and its graph source's access, as the admin API takes and shows them.

The way in (``notification_mode``) says where Graph delivers the tenant's notifications; the
``graph`` block says how the service's own Graph app reads its calendars when its event source
is ``graph``. Both are checked here, as a whole with the tenant's other settings, so that every
contradiction is a 422 with a field error that points at the field to fix. A secret (a client
secret, a certificate's private key) goes in and is never shown again: answers say only
``client_secret_set`` and the certificate's thumbprint, and the audit log what kind of
credential changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bookingcache.api.problems import FieldError, ProblemError
from bookingcache.domain.tenancy import (
    EventSource,
    GraphAccess,
    GraphCredential,
    GraphPermission,
    NotificationMode,
)
from bookingcache.settings import GraphSettings

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
DIRECTORY_PATTERN = f"^(?:{_GUID}|{_DOMAIN})$"
CLIENT_ID_PATTERN = f"^{_GUID}$"
_THUMBPRINT = re.compile(r"[0-9A-F]{40}")
MAX_PRIVATE_KEY = 16 * 1024
MIN_RSA_BITS = 2048

NOTIFICATION_MODE_DESCRIPTION = (
    "Where Graph delivers the tenant's notifications: `direct` (Alternative 1, the service's "
    "`/graph/notifications/{tenant}`) or `relay` (Alternative 2, the connector's relay, which "
    "calls `POST /v1/tenants/{tenant}/notifications`). Default: `relay` for event source "
    "`push`, which can only work by relay (`direct` with `push` is a 422 at "
    "body.notification_mode), else `direct`. A change re-converges the tenant's subscriptions "
    "to the new notification URL within seconds"
)

DirectoryTenant = Annotated[
    str,
    Field(
        pattern=DIRECTORY_PATTERN,
        max_length=253,
        description="The customer's Entra tenant id (a GUID) or one of its verified domains",
        examples=["contoso.onmicrosoft.com"],
    ),
]
ClientId = Annotated[
    str,
    Field(
        pattern=CLIENT_ID_PATTERN,
        description="The application (client) id of the app registration (a GUID)",
        examples=["11111111-2222-3333-4444-555555555555"],
    ),
]


def _printable(value: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("control characters are not allowed")
    return value


class GraphCertificateIn(BaseModel):
    """A certificate credential, as MSAL's ``client_credential`` takes it."""

    model_config = ConfigDict(extra="forbid")

    private_key: SecretStr = Field(
        description="The certificate's RSA private key (at least 2048 bits), PEM, without a "
        "passphrase (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`); "
        "sealed at rest, never shown again",
    )
    thumbprint: str = Field(
        min_length=40,
        max_length=64,
        description="The certificate's SHA-1 thumbprint, 40 hex digits (colons and spaces "
        "are ignored), as Entra and `Get-PfxCertificate` show it",
        examples=["52B2A1B34A2AB7C4F4F4A9B1E6E77F8E1D2C3B4A"],
    )

    @field_validator("private_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if len(text) > MAX_PRIVATE_KEY:
            raise ValueError(f"private_key must be at most {MAX_PRIVATE_KEY} characters")
        try:
            key = load_pem_private_key(text.encode("utf-8"), password=None)
        except TypeError:
            raise ValueError("private_key is encrypted: give it without a passphrase") from None
        except (ValueError, UnsupportedAlgorithm, UnicodeError):
            raise ValueError("private_key is not a PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("private_key must be an RSA key (Entra signs app assertions so)")
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"private_key must have at least {MIN_RSA_BITS} bits")
        return value

    @field_validator("thumbprint")
    @classmethod
    def _thumbprint(cls, value: str) -> str:
        folded = re.sub(r"[\s:]", "", value).upper()
        if not _THUMBPRINT.fullmatch(folded):
            raise ValueError("thumbprint must be the certificate's SHA-1 thumbprint, 40 hex digits")
        return folded


class GraphIn(BaseModel):
    """How the service's own Graph app reads the tenant's calendars (event source `graph`).

    Without `client_id` the service's shared app is used (its `BOOKINGCACHE_SYNC_GRAPH__*`
    settings); with it, exactly one of `client_secret` and `certificate`. In a PATCH only the
    fields present change: a new `client_secret` or `certificate` replaces the stored
    credential, and a new `client_id` needs one of them."""

    model_config = ConfigDict(extra="forbid")

    directory_tenant: DirectoryTenant | None = None
    client_id: ClientId | None = None
    client_secret: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="The app's client secret; sealed at rest, never shown again",
    )
    certificate: GraphCertificateIn | None = None
    permission: GraphPermission | None = Field(
        default=None,
        description="`read` (Calendars.Read: delta reads) or `read_basic` "
        "(Calendars.ReadBasic: plain calendarView); default the service's setting",
    )

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _printable(value.get_secret_value())
        return value


class GraphOut(BaseModel):
    directory_tenant: str
    client_id: str | None = Field(description="null: the service's shared app")
    permission: GraphPermission | None = Field(description="null: the service's setting")
    client_secret_set: bool = Field(description="a client secret is stored (never shown)")
    certificate_thumbprint: str | None = Field(
        description="the stored certificate's thumbprint (its private key is never shown)"
    )

    @classmethod
    def of(cls, access: GraphAccess | None) -> GraphOut | None:
        if access is None:
            return None
        return cls(
            directory_tenant=access.directory_tenant,
            client_id=access.client_id,
            permission=access.permission,
            client_secret_set=access.client_secret_set,
            certificate_thumbprint=access.certificate_thumbprint,
        )


@dataclass(frozen=True, slots=True)
class GraphChange:
    """What a request does to the graph access: the new access, and the credential to store
    (``replace``: ``credential``, which None drops; else the stored one stays)."""

    access: GraphAccess | None
    replace: bool
    credential: GraphCredential | None

    def store_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {"graph": self.access}
        if self.replace:
            changes["graph_credential"] = self.credential
        return changes

    def audited(self) -> dict[str, Any] | None:
        """The change as the audit log keeps it: no secret, only which kind was stored."""
        if self.access is None:
            return None
        credential = "kept"
        if self.replace:
            credential = "none"
            if self.credential is not None and self.credential.client_secret is not None:
                credential = "client_secret"
            elif self.credential is not None:
                credential = f"certificate {self.credential.thumbprint}"
        return {
            "directory_tenant": self.access.directory_tenant,
            "client_id": self.access.client_id,
            "permission": None if self.access.permission is None else self.access.permission.value,
            "credential": credential,
        }


def _invalid(field: str, message: str, kind: str = "value_error") -> ProblemError:
    return ProblemError(
        422,
        "invalid-input",
        f"{field}: {message}",
        field_errors=[FieldError(field=field, message=message, type=kind)],
    )


def _credential_of(body: GraphIn) -> GraphCredential | None:
    if body.client_secret is not None and body.certificate is not None:
        raise _invalid("body.graph.certificate", "give a client_secret or a certificate, not both")
    if body.client_secret is not None:
        return GraphCredential(client_secret=body.client_secret.get_secret_value())
    if body.certificate is not None:
        return GraphCredential(
            private_key=body.certificate.private_key.get_secret_value(),
            thumbprint=body.certificate.thumbprint,
        )
    return None


def _kept(current: GraphAccess | None) -> GraphAccess:
    return current if current is not None else GraphAccess(directory_tenant="")


def graph_change(
    current: GraphAccess | None, body: GraphIn | None, *, present: bool
) -> GraphChange:
    """The graph access after a request: ``body`` merged over ``current`` field by field
    (``present`` False: the request did not mention ``graph``; ``body`` None: it set it null)."""
    if not present:
        return GraphChange(current, replace=False, credential=None)
    if body is None:
        return GraphChange(None, replace=True, credential=None)
    given = body.model_fields_set
    directory = body.directory_tenant if body.directory_tenant is not None else None
    if directory is None:
        if "directory_tenant" in given or current is None:
            raise _invalid(
                "body.graph.directory_tenant",
                "required: the customer's Entra tenant id or verified domain",
                "missing",
            )
        directory = current.directory_tenant
    client_id = body.client_id if "client_id" in given else _kept(current).client_id
    permission = body.permission if "permission" in given else _kept(current).permission
    credential = _credential_of(body)
    had_credential = current is not None and (
        current.client_secret_set or current.certificate_thumbprint is not None
    )
    client_changed = current is None or client_id != current.client_id
    access = GraphAccess(directory_tenant=directory, client_id=client_id, permission=permission)
    if credential is not None:
        if client_id is None:
            raise _invalid(
                "body.graph.client_id",
                "a client_secret or certificate belongs to an app: give its client_id",
                "missing",
            )
        return GraphChange(access, replace=True, credential=credential)
    if client_id is None:
        # The service's shared app: a credential of the tenant's own app no longer applies.
        return GraphChange(access, replace=had_credential, credential=None)
    if client_changed or not had_credential:
        raise _invalid(
            "body.graph.client_secret",
            "the app of this client_id needs its client_secret or a certificate",
            "missing",
        )
    return GraphChange(access, replace=False, credential=None)


def check_combination(
    *,
    source: EventSource,
    mode: NotificationMode,
    access: GraphAccess | None,
    shared_app: GraphSettings,
) -> None:
    """422 for a tenant whose settings contradict each other."""
    if source is EventSource.PUSH and mode is NotificationMode.DIRECT:
        raise _invalid(
            "body.notification_mode",
            "event source 'push' can only work by relay: its events come with the relay's "
            "calls; set notification_mode to 'relay'",
        )
    if source is not EventSource.GRAPH:
        return
    if access is None:
        raise _invalid(
            "body.graph",
            "event source 'graph' needs graph: the customer's directory_tenant, and the "
            "client_id with its client_secret or certificate unless the service's shared app "
            "is used",
            "missing",
        )
    shared = shared_app.client_id and shared_app.client_secret.get_secret_value()
    if access.client_id is None and not shared:
        raise _invalid(
            "body.graph.client_id",
            "the service has no shared Graph app (BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID and "
            "__CLIENT_SECRET): give the tenant's client_id with its client_secret or certificate",
            "missing",
        )
