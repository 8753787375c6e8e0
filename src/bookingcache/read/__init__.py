"""The read side: the in-memory availability read model kept current from the change feed, and
who may read it."""
