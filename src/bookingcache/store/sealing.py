"""Sealing the secrets the store keeps: the tenants' signing secrets and clientStates (and any
secret the service must read back, unlike read tokens, which it keeps only as hashes).

A sealed value is a Fernet token (AES-128-CBC with HMAC-SHA256, a timestamp and a version
byte) made with the first of the configured keys; every configured key opens one, so a new key
is brought in by putting it first and keeping the old ones behind it until ``reseal`` has
sealed every stored value again with the new one. A value that opens with none of the keys is
``SecretsUnreadable``: the error names no value and no key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bookingcache.errors import SecretsUnreadable


class SecretBox:
    """Seals and opens stored secrets with a list of keys, newest first."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a secret box needs at least one key")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError:
            raise ValueError("a secrets key is not 32 bytes of URL-safe base64") from None

    def seal(self, value: str) -> str:
        """``value`` sealed with the newest key (a different text each time)."""
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        """The value ``sealed`` holds; ``SecretsUnreadable`` if no configured key opens it."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretsUnreadable(
                "a stored secret does not open with any key of BOOKINGCACHE_SECRETS_KEY: the "
                "key was changed or lost, or the database was written with another key"
            ) from None

    def reseal(self, sealed: str) -> str:
        """``sealed`` sealed again with the newest key; ``SecretsUnreadable`` as ``open``."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretsUnreadable(
                "a stored secret does not open with any key of BOOKINGCACHE_SECRETS_KEY"
            ) from None
