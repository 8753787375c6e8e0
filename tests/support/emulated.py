"""The Graph emulator (TLS, its own thread) with its control client, and the real connector
served on a loopback socket against it, as the tests that run a whole deployment set them up."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bookingcache.settings import GraphSettings
from bookingcache_connector.app import create_app as create_connector_app
from bookingcache_connector.bootstrap import build_connector
from bookingcache_connector.config import Settings as ConnectorSettings
from graph_emulator.auth import App
from graph_emulator.config import EmulatorConfig
from graph_emulator.seed import seed_demo
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import EmulatorState, new_state
from tests.support.servers import serve_in_thread


@dataclass
class EmulatedGraph:
    """A running emulator seeded with the demo directory: its apps by name, the certificate
    its TLS listener presents, and a client of its control API (``/_emulator``)."""

    emulator: BackgroundEmulator
    apps: dict[str, App]
    cert: Path
    control: httpx.Client

    @property
    def state(self) -> EmulatorState:
        return self.emulator.state

    def service_graph(self, app: str = "full") -> GraphSettings:
        """The service's own Graph settings (``sync.graph``) to read the emulator with ``app``."""
        chosen = self.apps[app]
        return GraphSettings(
            client_id=chosen.client_id,
            client_secret=SecretStr(chosen.client_secret),
            authority_host=self.emulator.root,
            graph_base_url=self.emulator.base_url,
            ca_bundle=str(self.cert),
        )


@contextlib.contextmanager
def emulated_graph(tmp: Path, *, seed: int = 5) -> Iterator[EmulatedGraph]:
    """The emulator, seeded with ``seed``, delivering notifications over plain HTTP too (the
    service and the connector listen on loopback without TLS); stopped on the way out."""
    state = new_state(EmulatorConfig(allow_http_notifications=True), seed=seed)
    apps = seed_demo(state)
    with BackgroundEmulator(state, tls_dir=tmp / "tls") as emulator:
        cert = emulator.listening.cert_path
        assert cert is not None
        with httpx.Client(
            base_url=f"{emulator.root}/_emulator",
            verify=ssl.create_default_context(cafile=str(cert)),
            timeout=30,
        ) as control:
            yield EmulatedGraph(emulator=emulator, apps=apps, cert=cert, control=control)


def serve_connector(
    emulator: BackgroundEmulator,
    app: App,
    sock: socket.socket,
    *,
    webhook_secret: str,
    service_url: str,
    service_tenant: str,
    state_dir: Path,
    **settings: Any,
) -> contextlib.AbstractContextManager[str]:
    """The connector on ``sock``, reading the emulator with ``app`` and relaying to the
    service's tenant; ``settings``: more of the connector's settings. Renewal is off (the
    tests drive time themselves)."""
    cert = emulator.listening.cert_path
    assert cert is not None
    connector = ConnectorSettings(
        tenant_id=emulator.state.tenant_id,
        client_id=app.client_id,
        client_secret=app.client_secret,
        authority_host=emulator.root,
        graph_url=emulator.base_url,
        ca_bundle=cert,
        webhook_secret=webhook_secret,
        service_url=service_url,
        service_tenant=service_tenant,
        state_dir=state_dir,
        renew_every_s=0,
        **settings,
    )
    return serve_in_thread(create_connector_app(build=lambda: build_connector(connector)), sock)
