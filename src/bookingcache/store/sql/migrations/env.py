"""Alembic environment: migrations always run on a connection handed over by
``store.engine.migrate`` (``config.attributes["connection"]``), never from an ini file."""

from __future__ import annotations

from alembic import context

from bookingcache.store.sql.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("migrations run through bookingcache.store.sql.engine.migrate()")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
