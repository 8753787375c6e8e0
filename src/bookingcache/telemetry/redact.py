"""Credentials out of log lines: URLs lose their user information and their query values.

A connector URL may carry a key in its query (an Azure Function's ``?code=``) or a user and
password, and httpx logs every request's full URL. A change stream's request target carries a
stream ticket (``?ticket=``), with or without a scheme and host before it. Whatever the service
writes to its log goes through ``redact_urls``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"

# A URL as it appears in running text: a scheme, then anything up to white space, a quote or a
# backslash (a JSON line escapes the quote that ends it).
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>\\]+""")
_QUERY_VALUE = re.compile(r"=[^&;]*")


_TICKET = re.compile(r"""([?&]ticket=)[^&\s"'<>\\]+""")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it stripped of its user information and query values, and
    every ``ticket=`` of a request target hidden."""
    if "ticket=" in text:
        text = _TICKET.sub(r"\1" + HIDDEN, text)
    if "://" not in text:
        return text
    return _URL.sub(_redact_one, text)


def _redact_one(match: re.Match[str]) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
    except ValueError:  # not parsable as a URL: hide all but its scheme
        return url.split("://", 1)[0] + "://" + HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        netloc = HIDDEN + "@" + netloc.rsplit("@", 1)[1]
    query = _QUERY_VALUE.sub("=" + HIDDEN, parts.query) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
