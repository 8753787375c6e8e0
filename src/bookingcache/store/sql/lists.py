"""A column among a list of values, in a statement whose text does not depend on the list's
length.

An expanding ``IN`` renders one bind per value, so every length of the list is another
statement text. asyncpg prepares each text it meets on each pooled connection and keeps up to
100 of them there (SQLAlchemy's cache of prepared statements), so reads that ask for a varying
number of calendars (the read model's re-checks, a page of availability) kept adding prepared
statements, and memory, to every API process for as long as new lengths turned up. On
PostgreSQL the list is one array parameter (``= ANY``): one text, prepared once a connection.
SQLite keeps the expanding ``IN``: its driver caches statements per connection too, but does
not pay a round trip to prepare one."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


def among(
    column: sa.ColumnElement[str], values: Collection[str], *, dialect: str
) -> sa.ColumnElement[bool]:
    """``column IN values`` for the ``dialect`` (a connection's ``dialect.name``)."""
    if dialect == "postgresql":
        listed = sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.String))
        return column == sa.any_(listed)
    return column.in_(values)
