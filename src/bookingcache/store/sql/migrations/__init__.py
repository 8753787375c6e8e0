"""Alembic migrations of the service database, run programmatically by ``store.engine.migrate``."""
