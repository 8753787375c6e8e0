"""The official msgraph-sdk, with tokens from MSAL Python, creates, lists, renews, reauthorizes
and deletes a subscription against the emulator over TLS; the validation handshake is answered
by a loopback receiver, and a vanished subscription answers 404."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_emulator.app import create_app
from graph_emulator.bench import LoopbackReceiver, serve
from graph_emulator.config import EmulatorConfig
from graph_emulator.seed import seed_demo
from graph_emulator.state import new_state
from graph_emulator.tls import write_self_signed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("no_ca_bundle_env"),
    # The SDK's generated code deprecates its own classes as it imports them.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
]
SCOPE = ["https://graph.microsoft.com/.default"]


@contextlib.asynccontextmanager
async def graph_client(root: str, cert: Path, msal_app: Any) -> AsyncIterator[Any]:
    """msgraph-sdk aimed at the emulator, over an HTTP client this test closes."""
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

    class MsalTokens(AccessTokenProvider):
        async def get_authorization_token(
            self, uri: str, additional_authentication_context: dict[str, Any] | None = None
        ) -> str:
            # MSAL is synchronous and the emulator shares this event loop.
            result = await asyncio.to_thread(msal_app.acquire_token_for_client, scopes=SCOPE)
            return str(result["access_token"])

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator(["127.0.0.1"])

    # The SDK wraps the client's transport in one that does not close it: close it here.
    transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    try:
        async with httpx.AsyncClient(transport=transport, timeout=30) as http:
            adapter = GraphRequestAdapter(
                BaseBearerTokenAuthenticationProvider(MsalTokens()),
                GraphClientFactory.create_with_default_middleware(client=http),
            )
            adapter.base_url = f"{root}/v1.0"
            yield GraphServiceClient(request_adapter=adapter)
    finally:
        await transport.aclose()


async def test_sdk_creates_renews_and_deletes_a_subscription(tmp_path: Path) -> None:
    import msal
    import requests
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.subscription import Subscription

    # Real time plus jumps: the test moves past Graph's 10 minutes between renew and reauthorize.
    state = new_state(EmulatorConfig(allow_http_notifications=True, virtual_clock=True), seed=3)
    app = seed_demo(state)["full"]
    room = sorted(state.directory.rooms(), key=lambda m: m.upn)[0]
    cert, key = write_self_signed(tmp_path, now=dt.datetime.now(dt.UTC))
    receiver = LoopbackReceiver()
    async with (
        serve(create_app(state), certfile=cert, keyfile=key) as root,
        serve(receiver) as receiver_url,
    ):
        # Closed before the servers stop, so no connection outlives them.
        with requests.Session() as session:
            session.verify = str(cert)
            # MSAL reads the OpenID configuration as it starts: not on the emulator's loop.
            msal_app = await asyncio.to_thread(
                msal.ConfidentialClientApplication,
                app.client_id,
                client_credential=app.client_secret,
                authority=f"{root}/{state.tenant_id}",
                instance_discovery=False,
                http_client=session,
            )
            async with graph_client(root, cert, msal_app) as client:
                now = dt.datetime.now(dt.UTC)
                created = await client.subscriptions.post(
                    Subscription(
                        change_type="created,updated,deleted",
                        notification_url=f"{receiver_url}/notify",
                        lifecycle_notification_url=f"{receiver_url}/lifecycle",
                        resource=f"users/{room.upn}/events",
                        expiration_date_time=now + dt.timedelta(days=2),
                        client_state="sdk-client-state",
                    )
                )
                assert created is not None
                assert created.id
                assert created.resource == f"users/{room.upn}/events"
                assert created.client_state == "sdk-client-state"
                assert created.application_id == app.client_id
                assert [path for path, _ in receiver.validations] == ["/notify", "/lifecycle"]

                listed = await client.subscriptions.get()
                assert listed is not None
                assert listed.value is not None
                assert [s.id for s in listed.value] == [created.id]

                wanted = (now + dt.timedelta(days=6)).replace(microsecond=0)
                one = client.subscriptions.by_subscription_id(created.id)
                renewed = await one.patch(Subscription(expiration_date_time=wanted))
                assert renewed is not None
                assert renewed.expiration_date_time == wanted

                # Graph: never reauthorize within 10 minutes of a renewal (or the other way).
                with pytest.raises(ODataError) as too_soon:
                    await one.reauthorize.post()
                assert too_soon.value.response_status_code == 409
                state.clock.advance(dt.timedelta(minutes=10))
                await one.reauthorize.post()
                await one.delete()
                with pytest.raises(ODataError) as gone:
                    await one.patch(Subscription(expiration_date_time=wanted))
                assert gone.value.response_status_code == 404
                assert gone.value.error is not None
                assert gone.value.error.code
