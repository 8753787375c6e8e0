"""Credentials out of the connector's log: URLs lose their user information and query values.

The relay's public URL usually carries an Azure Function key (``?code=...``), Graph's paging
and delta links carry state tokens, and a service URL may carry a user and password. httpx
logs every request's full URL at INFO, which the Functions host keeps, and httpx's errors
quote the URL they failed on. ``install`` puts a filter on httpx's loggers and on the
connector's own, which rewrites each record's message (and traceback) before any handler sees
it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"

# A URL in running text: a scheme, then anything up to white space, a quote, an angle bracket or
# a backslash (a JSON-encoded line escapes the quote that ends it).
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>\\]+""")
_QUERY_VALUE = re.compile(r"=[^&;]*")

# Loggers whose records may quote a URL: httpx's request log and errors, and the connector's.
_LOGGERS = ("httpx", "httpcore", "msal", "bookingcache_connector")


def redact_urls(text: str) -> str:
    """``text`` with each URL in it stripped of its user information and query values."""
    if "://" not in text:
        return text
    return _URL.sub(_hide_credentials, text)


def _hide_credentials(match: re.Match[str]) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL after all: keep only its scheme
        return url.split("://", 1)[0] + "://" + HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        netloc = HIDDEN + "@" + netloc.rsplit("@", 1)[1]
    query = _QUERY_VALUE.sub("=" + HIDDEN, parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class RedactUrls(logging.Filter):
    """Rewrites a record in place so that every handler, whoever configured it, gets the
    redacted text."""

    _traceback = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


_FILTER = RedactUrls()


def install() -> None:
    """Put the filter on httpx's loggers and on every connector module's logger (a logger's
    filters are not inherited by its children, so each gets its own). Safe to call again."""
    names = set(_LOGGERS)
    names.update(
        name
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith(tuple(f"{prefix}." for prefix in _LOGGERS))
    )
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
