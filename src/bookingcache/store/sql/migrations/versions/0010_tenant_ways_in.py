"""Each tenant's way in and its graph source's access, set through the admin API instead of the
environment's JSON (``BOOKINGCACHE_ORCHESTRATION_NOTIFICATION_MODES`` and
``BOOKINGCACHE_SYNC_GRAPH__TENANTS``, which are gone).

- ``tenants.notification_mode``: ``direct`` (Alternative 1) or ``relay`` (Alternative 2). Push
  tenants become ``relay``, the only way they work; every other tenant ``direct``, the old
  default (a tenant the JSON put in ``relay`` is moved by a PATCH, docs/operations.md).
- ``tenants.graph_*``: the customer's directory, the client id, the permission, the client
  secret or the certificate's private key (both sealed, ``store.sealing``) with its thumbprint,
  and a revision counting the changes (a process rebuilds its MSAL app when it moves).

Downgrading drops them all: the graph tenants' access is lost and has to be given again.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    "graph_revision",
    "graph_certificate_thumbprint",
    "graph_private_key",
    "graph_client_secret",
    "graph_permission",
    "graph_client_id",
    "graph_directory_tenant",
    "notification_mode",
)


def upgrade() -> None:
    # Plain ALTER TABLE on both engines, never a batch copy of ``tenants`` (see 0009).
    op.add_column(
        "tenants",
        sa.Column(
            "notification_mode", sa.String(16), nullable=False, server_default=sa.text("'direct'")
        ),
    )
    op.add_column("tenants", sa.Column("graph_directory_tenant", sa.String(256), nullable=True))
    op.add_column("tenants", sa.Column("graph_client_id", sa.String(256), nullable=True))
    op.add_column("tenants", sa.Column("graph_permission", sa.String(16), nullable=True))
    op.add_column("tenants", sa.Column("graph_client_secret", sa.Text(), nullable=True))
    op.add_column("tenants", sa.Column("graph_private_key", sa.Text(), nullable=True))
    op.add_column(
        "tenants", sa.Column("graph_certificate_thumbprint", sa.String(128), nullable=True)
    )
    op.add_column(
        "tenants",
        sa.Column("graph_revision", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.execute("UPDATE tenants SET notification_mode = 'relay' WHERE event_source = 'push'")


def downgrade() -> None:
    for column in _COLUMNS:
        op.execute(f"ALTER TABLE tenants DROP COLUMN {column}")
