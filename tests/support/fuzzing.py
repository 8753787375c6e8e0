"""Driving an OpenAPI document's operations with Schemathesis, as the security suites of the
service (tests/security/test_schemathesis.py) and of the connector
(connector/tests/test_schemathesis.py) do: every operation, in positive and negative mode, with
the checks given, every failure reported together; and an ASGI wrapper that signs the calls to
signed paths as their sender would."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.signing import sign

# The checks the security suites run; their module docstrings say which are left out and why.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
]
SIGNATURE_HEADERS = (b"webhook-id", b"webhook-timestamp", b"webhook-signature")

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


# The webhook-signature a generated call carries to ask ``SigningSender`` to sign it.
SIGN_ME = "v1,c2lnbi1tZQ=="


class SigningSender:
    """An ASGI wrapper that signs the requests to a signed path that ask for it (their
    ``webhook-signature`` is ``SIGN_ME``) as their sender would: over the request line as
    received and the body bytes, with ``secret_of(path)``, at ``now()``. Every other request
    passes through untouched, Schemathesis's probes without a signature or with a wrong one
    among them."""

    def __init__(
        self,
        app: Any,
        *,
        path: re.Pattern[str],
        secret_of: Callable[[str], str | None],
        now: Callable[[], dt.datetime],
    ) -> None:
        self.app = app
        self.path = path
        self.secret_of = secret_of
        self.now = now
        self.statuses: list[int] = []  # of the calls it signed

    def wants(self, path: str) -> bool:
        return self.path.fullmatch(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = scope["type"] == "http" and (b"webhook-signature", SIGN_ME.encode()) in [
            (name.lower(), value) for name, value in scope["headers"]
        ]
        secret = self.secret_of(scope["path"]) if asked else None
        if not (secret and self.wants(scope["path"])):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        target += f"?{query}" if query else ""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in SIGNATURE_HEADERS]
        try:
            signed = sign(secret, scope["method"], target, body, at=self.now())
        except UnicodeDecodeError:  # no sender signs a body that is not text
            signed = {}
        headers += [(k.encode(), v.encode()) for k, v in signed.items()]
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                message: dict[str, Any] = await receive()
                return message
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def noted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        await self.app({**scope, "headers": headers}, replay, noted)


def _exercise(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    prepare: Callable[[Any, GenerationMode], None],
    headers: dict[str, str] | None,
    checks: list[Any],
    signer: SigningSender | None,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: schemathesis.Case[Any]) -> None:
        prepare(case, mode)
        if (
            signer is not None
            and mode is GenerationMode.POSITIVE
            and signer.wants(case.formatted_path)
        ):
            case.headers = {**(case.headers or {}), "webhook-signature": SIGN_ME}
        case.call_and_validate(headers=headers, checks=checks)

    exercise()


def drive(
    schema: Any,
    *,
    examples: int,
    signer: SigningSender | None = None,
    prepare: Callable[[Any, GenerationMode], None] = lambda case, mode: None,
    headers: dict[str, str] | None = None,
    checks: list[Any] = CHECKS,
    skip: Callable[[str], bool] = lambda label: False,
    left_out: dict[str, list[Any]] | None = None,
) -> list[str]:
    """Every operation of ``schema`` in both modes (but those ``skip`` names), with ``checks``
    but those ``left_out`` lists for its label; the failures, all of them."""
    failures: list[str] = []
    # A body over the size limit is refused before it is parsed, and a request head over the
    # server's bounds before it reaches the app: 413, 414 and 431 reject invalid data too.
    rejection = schema.config.checks.negative_data_rejection
    schema.config.checks.negative_data_rejection = type(rejection)(
        expected_statuses=[*rejection.expected_statuses, "413", "414", "431"]
    )
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"unusable operation: {result.err()}")
            continue
        operation = result.ok()
        if skip(operation.label):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                relaxed = (left_out or {}).get(operation.label, [])
                kept = [check for check in checks if check not in relaxed]
                _exercise(operation, mode, examples, prepare, headers, kept, signer)
            except Unsatisfiable:
                # Nothing to make invalid: the operation takes no parameters and no body.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # noqa: BLE001 (report every operation's failures together)
                failures.append(f"{operation.label} ({mode}): {exc}")
    return failures
