"""Persistence: the store port and its SQLAlchemy adapter (SQLite or PostgreSQL)."""
