"""Persistence. The ports the services depend on are the modules here (``port``, ``inbox``,
``jobs``, ``subscriptions``, ``replays``); ``store.sql`` fills them with SQLAlchemy 2 over SQLite
or PostgreSQL, and only the composition root builds its adapters."""
