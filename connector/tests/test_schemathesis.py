"""Schemathesis over the connector's written contract (``connector/openapi.yaml``) against its
ASGI app: generated input, valid and invalid, never makes the connector fail, and every answer is
the one the contract describes.

The connector runs with fake Graph (``fakes.FakeGraph``) and a service that accepts every relay
call. Every operation the connector implements is driven in Schemathesis's positive and negative
modes. In positive mode an ASGI wrapper signs each call to the signed operations (``PUT
/v1/subscriptions``, ``GET /v1/calendars/{mailbox}/events``) exactly as sent, with the tenant's
secret and the connector's clock, so that generated input reaches the handlers instead of
stopping at the signature; in negative mode the signature headers are left as generated (missing
or malformed: a 401 problem). Graph's webhooks are driven with and without ``validationToken``.

``POST /v1/tenants/{tenant}/notifications`` is in the contract but served by the service; it is
driven, signed, by tests/security/test_schemathesis.py.

Checks run: those of ``tests.support.fuzzing.CHECKS``: ``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
``response_headers_conformance``, ``negative_data_rejection``, ``missing_required_header`` and
``ignored_auth``.

Left out on purpose:

- ``negative_data_rejection`` on Graph's two webhooks: with ``validationToken`` the connector
  answers Graph's handshake, echoing the token whatever the body (Graph's handshake has none,
  and nothing is stored), so an invalid body is rightly not refused there;
- ``positive_data_acceptance``: the contract cannot say that a window is at most 62 days and
  ends after it starts, which the events operation rightly refuses with 400;
- ``unsupported_method``: the contract does not promise 405 for methods it does not list;
- the stateful checks: the run sends independent calls.

Two sizes: ``EXAMPLES_QUICK`` per operation and mode in the quick loop, ``EXAMPLES_DEEP`` in the
run marked slow (CI).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import negative_data_rejection

from bookingcache_connector.app import create_app
from bookingcache_connector.bootstrap import build_connector
from bookingcache_connector.config import Settings
from tests.support.fuzzing import SigningSender, drive

from .conftest import SERVICE, WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph, identity_platform

SPEC = Path(__file__).resolve().parents[1] / "openapi.yaml"
SIGNED = re.compile(r"/v1/subscriptions|/v1/calendars/[^/]+/events")
SERVED_BY_THE_SERVICE = {"POST /v1/tenants/{tenant}/notifications"}
LEFT_OUT = {
    "POST /graph/notifications": [negative_data_rejection],
    "POST /graph/lifecycle": [negative_data_rejection],
}
EXAMPLES_QUICK = 12
EXAMPLES_DEEP = 60


def run_connector(
    make_settings: Callable[..., Settings], clock: FakeClock, graph: FakeGraph, examples: int
) -> None:
    service = httpx.MockTransport(lambda request: httpx.Response(202))
    settings = make_settings(service_url=SERVICE, service_tenant="contoso")

    def build() -> Any:
        return build_connector(
            settings,
            clock=clock,
            graph_transport=graph.transport(),
            service_transport=service,
            msal_transport=identity_platform(),
            rng=random.Random(7),
        )

    signer = SigningSender(
        create_app(build=build), path=SIGNED, secret_of=lambda path: WEBHOOK_SECRET, now=clock.now
    )
    schema = schemathesis.openapi.from_path(SPEC)
    schema.app = signer
    try:
        failures = drive(
            schema,
            examples=examples,
            signer=signer,
            skip=lambda label: label in SERVED_BY_THE_SERVICE,
            left_out=LEFT_OUT,
        )
    finally:
        shutdown_lifespans()
    assert not failures, "\n\n".join(failures)
    # The signed calls got past their signature, and some were served.
    assert 401 not in signer.statuses, signer.statuses
    assert 200 in signer.statuses, signer.statuses


def test_generated_input_never_breaks_the_connector(
    make_settings: Callable[..., Settings], clock: FakeClock, graph: FakeGraph
) -> None:
    run_connector(make_settings, clock, graph, EXAMPLES_QUICK)


@pytest.mark.slow
@pytest.mark.side_lane
def test_generated_input_never_breaks_the_connector_deep(
    make_settings: Callable[..., Settings], clock: FakeClock, graph: FakeGraph
) -> None:
    run_connector(make_settings, clock, graph, EXAMPLES_DEEP)
