"""The tenants' credentials in the database: named read tokens (only their SHA-256), the
signing secret with its rotation overlap and the graph source's own credential (both sealed,
``store.sealing``). ``SqlStore`` inherits
these operations of the store port from ``SqlCredentials``."""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from bookingcache.domain.tenancy import GraphCredential, ReadTokenInfo, Tenant, TenantSecrets
from bookingcache.errors import Conflict, InvalidInput, NotFound
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql.base import SqlBase
from bookingcache.store.sql.rows import tenant_from_row, tenant_values, token_hash
from bookingcache.store.sql.schema import read_tokens, tenants

# The name of the read token a tenant is created with.
DEFAULT_TOKEN = "default"  # noqa: S105 (a name, not a secret)
MAX_READ_TOKENS = 100  # per tenant
MAX_TOKEN_NAME = 64


def _require_tenant(conn: Connection, tenant_id: str) -> None:
    if conn.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id)) is None:
        raise NotFound(f"tenant {tenant_id!r} not found")


def insert_read_token(
    conn: Connection, tenant_id: str, name: str, token: str, *, at: dt.datetime
) -> None:
    """One named read token of the tenant (inside the caller's transaction)."""
    conn.execute(
        insert(read_tokens).values(
            tenant_id=tenant_id, name=name, token_sha256=token_hash(token), created_at=at
        )
    )


# A tenant's whole row: its settings and its signing secrets, as a relay call needs both.
_TENANT_ROW = select(tenants).where(tenants.c.id == bindparam("tenant_id"))


class SqlCredentials(SqlBase):
    # --- read tokens ---------------------------------------------------------------------
    async def check_read_token(self, tenant_id: str, token: str) -> bool:
        async with self.read() as conn:
            known = await conn.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id))
            if known is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            result = await conn.execute(
                select(read_tokens.c.token_sha256).where(read_tokens.c.tenant_id == tenant_id)
            )
            stored = list(result.scalars())
        presented = token_hash(token)
        matches = [hmac.compare_digest(str(digest), presented) for digest in stored]
        return any(matches)

    async def read_token_owners(self) -> dict[str, str]:
        async with self.read() as conn:
            result = await conn.execute(select(read_tokens.c.token_sha256, read_tokens.c.tenant_id))
            return {str(digest): str(tenant_id) for digest, tenant_id in result}

    async def create_read_token(self, tenant_id: str, name: str, token: str) -> ReadTokenInfo:
        if not name or len(name) > MAX_TOKEN_NAME:
            raise InvalidInput(f"a read token's name must be 1 to {MAX_TOKEN_NAME} characters")
        now = self._clock.now()

        def work(conn: Connection) -> None:
            _require_tenant(conn, tenant_id)
            count = conn.scalar(select(func.count()).where(read_tokens.c.tenant_id == tenant_id))
            if (count or 0) >= MAX_READ_TOKENS:
                raise Conflict(f"a tenant has at most {MAX_READ_TOKENS} read tokens")
            exists = conn.scalar(
                select(read_tokens.c.name).where(
                    read_tokens.c.tenant_id == tenant_id, read_tokens.c.name == name
                )
            )
            if exists is not None:
                raise Conflict(f"tenant {tenant_id!r} has a read token named {name!r}")
            insert_read_token(conn, tenant_id, name, token, at=now)

        try:
            await self.transaction(work)
        except IntegrityError as exc:  # two creations of one name at once
            raise Conflict(f"tenant {tenant_id!r} has a read token named {name!r}") from exc
        self._notify_tenants(tenant_id)
        return ReadTokenInfo(name=name, created_at=now)

    async def list_read_tokens(self, tenant_id: str) -> Sequence[ReadTokenInfo]:
        async with self.read() as conn:
            known = await conn.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id))
            if known is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            result = await conn.execute(
                select(read_tokens.c.name, read_tokens.c.created_at, read_tokens.c.last_used_at)
                .where(read_tokens.c.tenant_id == tenant_id)
                .order_by(read_tokens.c.created_at, read_tokens.c.name)
            )
            return [
                ReadTokenInfo(
                    name=row.name, created_at=row.created_at, last_used_at=row.last_used_at
                )
                for row in result
            ]

    async def revoke_read_token(self, tenant_id: str, name: str) -> None:
        def work(conn: Connection) -> None:
            _require_tenant(conn, tenant_id)
            deleted = conn.execute(
                delete(read_tokens).where(
                    read_tokens.c.tenant_id == tenant_id, read_tokens.c.name == name
                )
            )
            if deleted.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} has no read token named {name!r}")

        await self.transaction(work)
        self._notify_tenants(tenant_id)

    async def note_read_tokens_used(self, uses: Mapping[str, dt.datetime]) -> None:
        if not uses:
            return

        def work(conn: Connection) -> None:
            for digest, at in uses.items():
                conn.execute(
                    update(read_tokens)
                    .where(
                        read_tokens.c.token_sha256 == digest,
                        or_(read_tokens.c.last_used_at.is_(None), read_tokens.c.last_used_at < at),
                    )
                    .values(last_used_at=at)
                )

        await self.transaction(work)

    # --- signing secrets ---------------------------------------------------------------------
    async def get_signing_secret(self, tenant_id: str) -> str:
        async with self.read() as conn:
            result = await conn.execute(
                select(tenants.c.signing_secret).where(tenants.c.id == tenant_id)
            )
            secret = result.scalar_one_or_none()
        if secret is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return self._box.open(str(secret))

    async def signing_secrets(self, tenant_id: str) -> list[str]:
        return (await self.signed_tenant(tenant_id))[1]

    async def signed_tenant(self, tenant_id: str) -> tuple[Tenant, list[str]]:
        async with self.read() as conn:
            row = (await conn.execute(_TENANT_ROW, {"tenant_id": tenant_id})).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        found = [self._box.open(str(row.signing_secret))]
        until = row.previous_signing_secret_until
        previous = row.previous_signing_secret
        if previous is not None and until is not None and self._clock.now() < until:
            found.append(self._box.open(str(previous)))
        return tenant_from_row(row), found

    async def rotate_signing_secret(
        self, tenant_id: str, secret: str, *, overlap: dt.timedelta
    ) -> dt.datetime:
        now = self._clock.now()
        until = now + overlap
        sealed = self._box.seal(secret)

        def work(conn: Connection) -> None:
            result = conn.execute(
                update(tenants)
                .where(tenants.c.id == tenant_id)
                .values(
                    previous_signing_secret=tenants.c.signing_secret,
                    previous_signing_secret_until=until,
                    signing_secret=sealed,
                    updated_at=now,
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found")

        await self.transaction(work)
        self._notify_tenants(tenant_id)
        return until

    async def set_tenant_secrets(self, tenant_id: str, secrets: TenantSecrets) -> None:
        now = self._clock.now()
        sealed = self._box.seal(secrets.signing_secret)

        def work(conn: Connection) -> None:
            result = conn.execute(
                update(tenants)
                .where(tenants.c.id == tenant_id)
                .values(
                    signing_secret=sealed,
                    previous_signing_secret=None,
                    previous_signing_secret_until=None,
                    updated_at=now,
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found")
            conn.execute(delete(read_tokens).where(read_tokens.c.tenant_id == tenant_id))
            insert_read_token(conn, tenant_id, DEFAULT_TOKEN, secrets.read_token, at=now)

        await self.transaction(work)
        self._notify_tenants(tenant_id)

    # --- the graph source's credential -------------------------------------------------------
    def sealed_graph_credential(self, credential: GraphCredential | None) -> dict[str, Any]:
        """Column values of a tenant's own Graph credential, its secret parts sealed (None:
        none, the service's shared app)."""
        if credential is None:
            return {
                "graph_client_secret": None,
                "graph_private_key": None,
                "graph_certificate_thumbprint": None,
            }
        return {
            "graph_client_secret": None
            if credential.client_secret is None
            else self._box.seal(credential.client_secret),
            "graph_private_key": None
            if credential.private_key is None
            else self._box.seal(credential.private_key),
            "graph_certificate_thumbprint": credential.thumbprint,
        }

    def tenant_change_values(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Column values of ``update_tenant``'s changes: a ``graph_credential`` sealed, the
        access's revision bumped when it or the credential changes (``graph`` None drops the
        credential too: no access keeps no secret)."""
        changes = dict(changes)
        if "graph" in changes and changes["graph"] is None:
            changes.setdefault("graph_credential", None)
        graph_changed = "graph" in changes or "graph_credential" in changes
        sealed: dict[str, Any] = {}
        if "graph_credential" in changes:
            sealed = self.sealed_graph_credential(changes.pop("graph_credential"))
        values = tenant_values(changes) | sealed
        if graph_changed:
            values["graph_revision"] = tenants.c.graph_revision + 1
        return values

    async def graph_credential(self, tenant_id: str) -> GraphCredential | None:
        async with self.read() as conn:
            result = await conn.execute(
                select(
                    tenants.c.graph_client_secret,
                    tenants.c.graph_private_key,
                    tenants.c.graph_certificate_thumbprint,
                ).where(tenants.c.id == tenant_id)
            )
            row = result.first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        if row.graph_client_secret is not None:
            return GraphCredential(client_secret=self._box.open(str(row.graph_client_secret)))
        if row.graph_private_key is not None:
            return GraphCredential(
                private_key=self._box.open(str(row.graph_private_key)),
                thumbprint=row.graph_certificate_thumbprint,
            )
        return None


def reseal_graph_credentials(conn: Connection, box: SecretBox) -> int:
    """Seal every tenant's Graph client secret and private key again with the newest key
    (inside the caller's transaction); how many."""
    count = 0
    query = select(tenants.c.id, tenants.c.graph_client_secret, tenants.c.graph_private_key)
    for row in conn.execute(query).all():
        values = {
            name: box.reseal(sealed)
            for name, sealed in (
                ("graph_client_secret", row.graph_client_secret),
                ("graph_private_key", row.graph_private_key),
            )
            if sealed is not None
        }
        if values:
            conn.execute(update(tenants).where(tenants.c.id == row.id).values(**values))
            count += len(values)
    return count
