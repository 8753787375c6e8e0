"""A stand-in for a tenant's connector on a loopback port that records the service's converge
calls, for the tests that count them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import serve_in_thread


@dataclass(frozen=True)
class ConvergeCall:
    at: float  # time.monotonic() when it came
    mailboxes: list[str]  # sorted


class RecordingConnector:
    """Answers the converge call (``PUT /v1/subscriptions``) with no subscriptions, and keeps
    when each came and the mailboxes it asked for."""

    def __init__(self) -> None:
        self.calls: list[ConvergeCall] = []
        self.app = Starlette(routes=[Route("/v1/subscriptions", self._put, methods=["PUT"])])

    @property
    def mailboxes(self) -> list[list[str]]:
        """The mailboxes of each call, in the order they came."""
        return [call.mailboxes for call in self.calls]

    @property
    def times(self) -> list[float]:
        """When each call came (``time.monotonic()``), in order."""
        return [call.at for call in self.calls]

    async def _put(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(ConvergeCall(time.monotonic(), sorted(body.get("mailboxes", []))))
        return JSONResponse({"subscriptions": []})


@contextlib.contextmanager
def recording_connector() -> Iterator[tuple[RecordingConnector, str]]:
    """A recording connector served on a free loopback port, and its base URL."""
    recording = RecordingConnector()
    with serve_in_thread(recording.app) as url:
        yield recording, url
