"""The secrets the service must read back are sealed (``store.sealing``): each tenant's
signing secret and every clientState, which until now were stored in plain text. Read tokens
stay what they were, SHA-256 hashes.

A sealed clientState is longer than the 200 characters its column held (Graph allows 128 before
sealing), so the column becomes text. The keys come from the store that migrates
(``engine.migrate`` puts its ``SecretBox`` in the configuration's attributes). Downgrading
opens every value again and stores it in plain text.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

from bookingcache.store.sealing import SecretBox

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_tenants = sa.table("tenants", sa.column("id", sa.String()), sa.column("signing_secret", sa.Text()))
_client_states = sa.table(
    "client_states", sa.column("id", sa.Integer()), sa.column("secret", sa.Text())
)


def _box() -> SecretBox:
    box = context.config.attributes.get("secret_box")
    if not isinstance(box, SecretBox):
        raise RuntimeError("migration 0008 needs the store's secret box (engine.migrate)")
    return box


def _rewrite(change: Callable[[str], str]) -> None:
    connection = op.get_bind()
    for row in connection.execute(sa.select(_tenants.c.id, _tenants.c.signing_secret)).all():
        connection.execute(
            sa.update(_tenants)
            .where(_tenants.c.id == row.id)
            .values(signing_secret=change(row.signing_secret))
        )
    for row in connection.execute(sa.select(_client_states.c.id, _client_states.c.secret)).all():
        connection.execute(
            sa.update(_client_states)
            .where(_client_states.c.id == row.id)
            .values(secret=change(row.secret))
        )


def upgrade() -> None:
    with op.batch_alter_table("client_states") as batch:
        batch.alter_column(
            "secret", existing_type=sa.String(200), type_=sa.Text(), existing_nullable=False
        )
    box = _box()
    _rewrite(box.seal)


def downgrade() -> None:
    box = _box()
    _rewrite(box.open)
    with op.batch_alter_table("client_states") as batch:
        batch.alter_column(
            "secret", existing_type=sa.Text(), type_=sa.String(200), existing_nullable=False
        )
