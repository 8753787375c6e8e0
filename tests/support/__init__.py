"""Helpers the service's tests share: the fixtures themselves live in tests/conftest.py."""
