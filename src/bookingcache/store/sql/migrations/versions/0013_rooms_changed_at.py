"""When each tenant's rooms last changed: ``tenants.rooms_changed_at``.

Every write of a tenant's rooms (a room linked, replaced, imported or unlinked) sets it in the
same transaction. A change-stream client that comes back after it has been away is sent a
``reset`` when the rooms (or the tenant's settings, ``tenants.updated_at``) changed since its
last event: its rooms are then no longer the ones it was sent (docs/api.md, "Event ids").

The upgrade sets it to each tenant's newest ``rooms.updated_at`` (NULL without rooms). An unlink
before the upgrade left no row to date it: for the change feed's retention after the upgrade
(a day by default), a client may resume across such an unlink without a reset, as before.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bookingcache.store.sql.schema import UTCDateTime

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both engines, never a batch copy of ``tenants`` (see 0009).
    op.add_column("tenants", sa.Column("rooms_changed_at", UTCDateTime(), nullable=True))
    op.execute(
        "UPDATE tenants SET rooms_changed_at = "
        "(SELECT max(rooms.updated_at) FROM rooms WHERE rooms.tenant_id = tenants.id)"
    )


def downgrade() -> None:
    op.drop_column("tenants", "rooms_changed_at")
