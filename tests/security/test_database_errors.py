"""A failed statement's error tells no secret: the database errors the store raises (and that
the services log with their traceback) do not carry the statement's parameters, which may be a
clientState, a signing secret or a read token's hash.

Found by the session's secrets scan: a clientState rotated for a tenant deleted meanwhile
failed its foreign key, and the orchestration's log of that failure (with its traceback) held the
new clientState among the failed INSERT's parameters. Shown here with a tenant created twice,
whose second signing secret the unique-key error carried. Runs on every engine
``database_url`` gives.
"""

from __future__ import annotations

import logging
import traceback

import pytest

from bookingcache.domain.tenancy import Tenant, TenantSecrets
from bookingcache.store.sql.store import SqlStore

SIGNING_SECRET = "whsec_ZHVwbGljYXRlLXRlbmFudC1zaWduaW5nLXNlY3JldA=="


def told(exc: BaseException) -> str:
    """Everything a log of ``exc`` with its traceback would show, its causes included."""
    return "".join(traceback.format_exception(exc))


async def test_a_failed_tenant_write_does_not_tell_its_secret(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await store.create_tenant(
        Tenant(id="twice", name="Twice", connector_url="https://connector.test"),
        TenantSecrets(signing_secret="whsec_" + "Zmlyc3Q=" * 6, read_token="twice.first-token"),
    )
    with pytest.raises(Exception) as raised:  # noqa: PT011
        await store.create_tenant(
            Tenant(id="twice", name="Twice", connector_url="https://connector.test"),
            TenantSecrets(signing_secret=SIGNING_SECRET, read_token="twice.second-token"),
        )
    assert SIGNING_SECRET not in told(raised.value)
    assert SIGNING_SECRET not in caplog.text
