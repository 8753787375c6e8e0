"""Change-feed sequence numbers are handed out at commit, by the server, on PostgreSQL.

Until now ``append_changes`` took a cluster-wide transaction-scoped advisory lock before its
INSERT, so seqs followed commit order; the lock was held across the client's round trips up to
its COMMIT, and with several workers most sessions waited on it. Now:

- ``calendar_changes_number_at_commit()``: takes the same advisory lock (key ``"feed"``) and
  gives the new row its final seq, the sequence's next value;
- the constraint trigger ``calendar_changes_number_at_commit``, ``AFTER INSERT ... DEFERRABLE
  INITIALLY DEFERRED FOR EACH ROW``, runs it inside COMMIT, before the commit record. The lock
  is then held only for the rest of the commit and released after the commit is visible, so a
  seq handed out later is always greater than every seq already visible. A transaction's rows
  keep their insertion order (deferred triggers fire in the order they were queued).

The seq an INSERT's RETURNING gives is provisional. A process of the previous version still
takes the lock before its INSERT, which the trigger then takes again (the same transaction's
lock), so old and new processes together keep the order. SQLite needs nothing: its one writer
already appends in commit order.

Downgrading drops the trigger and the function; the previous version's appends take the lock
themselves again.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

# 1717921124 = 0x66656564, "feed": the key append_changes took itself until this revision.
# calendar_changes_seq_seq: the sequence of the seq column (bigserial, revision 0001).
_FUNCTION = """
CREATE FUNCTION calendar_changes_number_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Held to the end of the transaction, released once its commit is visible.
    PERFORM pg_advisory_xact_lock(1717921124);
    UPDATE calendar_changes SET seq = nextval('calendar_changes_seq_seq') WHERE seq = NEW.seq;
    RETURN NULL;
END
$$
"""
_TRIGGER = """
CREATE CONSTRAINT TRIGGER calendar_changes_number_at_commit AFTER INSERT ON calendar_changes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION calendar_changes_number_at_commit()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER calendar_changes_number_at_commit ON calendar_changes")
    op.execute("DROP FUNCTION calendar_changes_number_at_commit()")
