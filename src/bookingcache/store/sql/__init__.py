"""The SQL adapters of the store ports: one SQLAlchemy code path for SQLite and PostgreSQL,
with the schema and its Alembic migrations."""
