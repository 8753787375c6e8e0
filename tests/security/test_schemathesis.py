"""Schemathesis over the service's whole OpenAPI document, signed calls included: generated
input, valid and invalid, never makes the service fail, and every answer is the one the document
describes.

Every documented operation is driven in Schemathesis's positive and negative modes with the
admin token. In positive mode the relay's ``POST /v1/tenants/{tenant}/notifications`` is aimed
at an existing tenant, and an ASGI wrapper (``tests.support.fuzzing.SigningSender``) signs each
generated call exactly as sent (the request line and the body bytes, with the tenant's secret
and the service's clock), so that the generated input reaches the relay's own checks instead of
stopping at the signature; in negative mode it is left as generated (no signature: a 401
problem). Graph's webhooks are driven with and without ``validationToken``.

The document describes the relay's body (the connector contract's ``RelayNotification``) and
its three ``webhook-*`` headers, and Graph's ``changeNotificationCollection`` and
``validationToken``: generated relay calls that pass their signature reach the body's checks,
and some of them must be accepted (202).

Checks run: ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``,
``response_schema_conformance``, ``response_headers_conformance``,
``negative_data_rejection``, ``missing_required_header`` and ``ignored_auth`` (a call that
succeeded with the admin token is sent again without it and with a wrong one, and must then be
refused).

Left out on purpose:

- ``negative_data_rejection`` on Graph's two webhooks: with ``validationToken`` the service
  answers Graph's handshake, echoing the token whatever the body (Graph's handshake has none,
  and nothing is stored), so an invalid body is rightly not refused there;
- ``positive_data_acceptance``: rules the schema cannot express (a known time zone,
  ``connector_url`` required for the connector source, a window that ends after it starts, one
  of ``rooms`` or ``building``) rightly refuse schema-valid input with 422;
- ``unsupported_method``: the service's routers answer a method a path does not have with 405,
  but Graph's webhook paths are served before the router (docs/architecture.md) and FastAPI's
  404/405 for undocumented methods are not part of the contract;
- the stateful checks (``use_after_free``, ``ensure_resource_availability``): the run sends
  independent calls, not the sequences of a stateful test.

Two sizes: ``EXAMPLES_QUICK`` per operation and mode in the quick loop, ``EXAMPLES_DEEP`` in the
run marked slow (CI). ``.venv/bin/pytest tests/security/test_schemathesis.py --durations=0``
shows what each costs.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from pydantic import SecretStr
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
)

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import SECRETS_KEY
from tests.support.fuzzing import SigningSender, drive

EXAMPLES_QUICK = 12
EXAMPLES_DEEP = 60
RELAY = re.compile(r"/v1/tenants/(?P<tenant>[^/]+)/notifications")
LEFT_OUT = {
    "POST /graph/notifications/{tenant}": [negative_data_rejection],
    "POST /graph/lifecycle/{tenant}": [negative_data_rejection],
}


def run_service(tmp_path: Path, database_url: str, examples: int) -> None:
    clock = FixedClock(dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC))
    settings = Settings(
        environment="development",
        data_dir=tmp_path,
        database_url=database_url,
        admin_token=SecretStr(ADMIN_TOKEN),
        secrets_key=SecretStr(SECRETS_KEY),
        database_wait_s=0,
        # Every generated call comes from one client address, and the wrong-credential probes
        # would spend its failure budget: the checks here are of the answers to wrong
        # credentials (401/403), so the throttle (tests/api/test_auth_throttle.py) gets
        # budgets no run spends.
        auth_failure_burst=1_000_000,
        tenant_auth_failure_burst=1_000_000,
    )
    secrets: dict[str, str] = {}

    def secret_of(path: str) -> str | None:
        match = RELAY.fullmatch(path)
        return secrets.get(match["tenant"]) if match else None

    signer = SigningSender(
        service_app(settings, clock=clock), path=RELAY, secret_of=secret_of, now=clock.now
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", signer)
    try:
        create = schema["/v1/tenants"]["POST"].Case(
            body={"id": "relayer", "name": "Relayer", "event_source": "push"}
        )
        created = create.call(headers=ADMIN)
        assert created.status_code == 201, created.text
        secrets["relayer"] = created.json()["secrets"]["signing_secret"]
        # A stream of a tenant that exists (generated input rarely names one): its events, as
        # Schemathesis reads them, are the ones the document describes.
        stream = schema["/v1/tenants/{tenant}/stream"]["GET"].Case(
            path_parameters={"tenant": "relayer"}
        )
        streamed = stream.call(headers=ADMIN, timeout=2)
        assert streamed.status_code == 200, streamed.text
        assert b"event: snapshot\n" in streamed.content, streamed.content[:300]
        stream.validate_response(streamed, checks=[response_schema_conformance])

        def prepare(case: Any, mode: GenerationMode) -> None:
            relay = RELAY.fullmatch(case.operation.path.replace("{tenant}", "t"))
            if relay and mode is GenerationMode.POSITIVE:
                case.path_parameters = {"tenant": "relayer"}

        failures = drive(
            schema,
            examples=examples,
            signer=signer,
            prepare=prepare,
            headers=ADMIN,
            left_out=LEFT_OUT,
        )
    finally:
        shutdown_lifespans()
    assert not failures, "\n\n".join(failures)
    # The signed calls got past their signature: the generated input was the relay's to judge,
    # and once the document describes its body, some of it is accepted.
    assert signer.statuses, "no relay call was signed"
    assert 401 not in signer.statuses, signer.statuses
    assert 202 in signer.statuses, signer.statuses


def test_generated_input_never_breaks_the_service(tmp_path: Path, database_url: str) -> None:
    run_service(tmp_path, database_url, EXAMPLES_QUICK)


@pytest.mark.slow
@pytest.mark.side_lane
def test_generated_input_never_breaks_the_service_deep(tmp_path: Path, database_url: str) -> None:
    run_service(tmp_path, database_url, EXAMPLES_DEEP)
