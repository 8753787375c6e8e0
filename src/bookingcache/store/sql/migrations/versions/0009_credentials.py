"""Credentials with a life of their own, and the audit log of admin changes.

- ``read_tokens``: a tenant's named read tokens, each only as its SHA-256, with when it was
  made and last used. Each tenant's one read token so far moves there as ``default``, and the
  ``tenants.read_token_sha256`` column goes.
- ``tenants.previous_signing_secret`` (sealed) and ``previous_signing_secret_until``: after a
  rotation the previous signing secret keeps verifying until then.
- ``audit_log``: every admin change, who, what, when and from where, never a secret value.

Downgrading keeps, per tenant, the token named ``default`` (or else the oldest) as its one read
token; the others, the previous signing secrets and the audit log are lost.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bookingcache.store.sql.schema import UTCDateTime

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "read_tokens",
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_read_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_read_tokens_token_sha256"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_read_tokens_tenant_id_tenants",
            ondelete="CASCADE",
        ),
    )
    op.execute(
        "INSERT INTO read_tokens (tenant_id, name, token_sha256, created_at) "
        "SELECT id, 'default', read_token_sha256, created_at FROM tenants"
    )
    # Plain ALTER TABLE on both engines (SQLite has DROP COLUMN since 3.35): a batch copy of
    # ``tenants`` on SQLite would drop the old table, and with it, through the foreign keys'
    # ON DELETE CASCADE, everything the tenants own.
    op.execute("ALTER TABLE tenants DROP COLUMN read_token_sha256")
    op.add_column("tenants", sa.Column("previous_signing_secret", sa.Text(), nullable=True))
    op.add_column(
        "tenants", sa.Column("previous_signing_secret_until", UTCDateTime(), nullable=True)
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=True),
        sa.Column("target", sa.String(320), nullable=True),
        sa.Column("details", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_tenant_id_id", "audit_log", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_tenant_id_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.execute("ALTER TABLE tenants DROP COLUMN previous_signing_secret_until")
    op.execute("ALTER TABLE tenants DROP COLUMN previous_signing_secret")
    # NOT NULL needs a default to be added in place (see upgrade); a tenant left without any
    # token keeps it, a hash no token has: it can then be read by none.
    nobody = "0" * 64
    op.add_column(
        "tenants",
        sa.Column(
            "read_token_sha256",
            sa.String(64),
            nullable=False,
            server_default=sa.text(f"'{nobody}'"),
        ),
    )
    kept = (
        "SELECT r.token_sha256 FROM read_tokens r WHERE r.tenant_id = tenants.id "
        "ORDER BY CASE WHEN r.name = 'default' THEN 0 ELSE 1 END, r.created_at LIMIT 1"
    )
    op.execute(
        f"UPDATE tenants SET read_token_sha256 = ({kept}) "  # noqa: S608 (no input)
        "WHERE EXISTS (SELECT 1 FROM read_tokens r WHERE r.tenant_id = tenants.id)"
    )
    op.drop_table("read_tokens")
