"""Secrets never leave: a pytest plugin that collects every secret the test run makes and every
text the service and the connector let out, and fails the run if one holds the other.

Registered by ``tests/conftest.py`` and ``connector/tests/conftest.py`` (once per session,
whichever loads first): ``install(config)``.

What it collects, for the whole session:

- **Secrets**, where they are made or handed over: a tenant's read token and signing secret
  (``SqlStore.create_tenant``, which the admin API's tenant creation and the tests' own set-ups
  both go through), every named read token (``create_read_token``) and rotated signing secret
  (``rotate_signing_secret``, both of ``SqlCredentials``), every clientState the service makes
  current (``SqlSubscriptions.rotate_client_state``), the admin token and Graph client secrets
  of every service container that starts (``Container.start_service`` / ``start_worker``) with
  the keys that seal its stored secrets, and on the
  connector's side its webhook secret (``Signer`` / ``Verifier``), its Graph client secret
  (``MsalTokenProvider``) and the clientStates it is configured with (``Relay``). The
  clientStates the service hands the connector are registered where the service makes them;
  the bodies a test or Schemathesis makes up are not secrets (a generated clientState may well
  be a word of an error message). Values shorter than ``MIN_SECRET_LENGTH`` are the tests'
  placeholders, not secrets anyone could rely on (a real one has 32 bytes or more), and are left
  out: they would match by chance.
- **Texts**: every log record of the test process, formatted with its exception text (a handler
  on the root logger, which is set for the session to ``LOG_LEVEL``, INFO: the service's own
  default, so the run logs what a deployment does; DEBUG would slow the run enough to change
  what the timing-sensitive tests see), the output child processes wrote
  to their log files (``tools.processes.Child``), every answer an ``httpx`` client of the tests
  received (status line, headers and body), and the Prometheus exposition of every service
  container as it closes.

Answers that hand a secret to its owner are not texts that leak; they are listed in
``HANDOVERS``: the service's answers to a tenant's creation, a read token's creation and a
signing secret's rotation (the places its secrets are shown), Graph's answers about
subscriptions (Graph echoes the clientState to the subscription's owner), and the Graph
emulator's inspection of those records. The fakes' and the emulator's
other answers are scanned like any other.

At the end of the session every text is searched for every secret; any hit makes the run fail
(exit status 1) with a report naming the kind of secret, where it was found, and its first four
characters only.

The search is exact and fast enough for the whole suite: each secret is indexed by a
``WINDOW``-character slice of its longest run of token characters (``[A-Za-z0-9_-]``); a text's
runs of token characters are slid over that index, and only a hit there is confirmed with a
plain substring search. A secret whose longest run is shorter than the window is searched for
plainly in every text.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

PLUGIN_NAME = "bookingcache-secrets-scan"
MIN_SECRET_LENGTH = 12
LOG_LEVEL = logging.INFO
WINDOW = 12
_RUN = re.compile(rf"[A-Za-z0-9_-]{{{WINDOW},}}")
_PIECE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Finding:
    kind: str
    hint: str  # the secret's first characters and its length, never the secret
    where: str
    excerpt: str  # the text around it, the secret masked

    def __str__(self) -> str:
        return f"{self.kind} ({self.hint}) in {self.where}: ...{self.excerpt}..."


# An answer that legitimately hands a secret to its owner: (method, URL path pattern, status).
HANDOVERS: list[tuple[str, re.Pattern[str], int | None, str]] = [
    ("POST", re.compile(r"/v1/tenants"), 201, "a tenant's creation shows its secrets once"),
    (
        "POST",
        re.compile(r"/v1/tenants/[^/]+/read-tokens"),
        201,
        "a read token's creation shows the token once",
    ),
    (
        "POST",
        re.compile(r"/v1/tenants/[^/]+/signing-secret:rotate"),
        200,
        "a signing secret's rotation shows the new secret once",
    ),
    (
        "*",
        re.compile(r"(/v1\.0|/beta)?/subscriptions(/[^/]*)?"),
        None,
        "Graph echoes a subscription's clientState to its owner",
    ),
    (
        "GET",
        re.compile(r"/_emulator/subscriptions"),
        None,
        "the Graph emulator's inspection of Graph's own records, for the tests",
    ),
]


def _is_handover(method: str, path: str, status: int) -> bool:
    for allowed_method, pattern, allowed_status, _ in HANDOVERS:
        if allowed_method not in ("*", method):
            continue
        if allowed_status is not None and allowed_status != status:
            continue
        if pattern.fullmatch(path):
            return True
    return False


@dataclass
class SecretScan:
    """The secrets and the texts of one session, and the search of one in the other."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> what it is
    texts: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # digest -> (where, text)
    files: set[Path] = field(default_factory=set)
    answers: list[httpx.Response] = field(default_factory=list)

    # --- collecting ---------------------------------------------------------------------------
    def secret(self, value: object, kind: str) -> None:
        text = _plain(value)
        if text is not None and len(text) >= MIN_SECRET_LENGTH:
            self.secrets.setdefault(text, kind)

    def text(self, where: str, text: str) -> None:
        if text:
            digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()
            self.texts.setdefault(digest, (where, text))

    def answer(self, response: httpx.Response) -> None:
        """Keep the answer as it came; it is read at the end (reading it here would slow every
        call of the run)."""
        self.answers.append(response)

    def _answer_text(self, response: httpx.Response) -> tuple[str, str] | None:
        request = response.request
        if _is_handover(request.method, request.url.path, response.status_code):
            return None
        head = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        where = f"the answer to {request.method} {request.url.copy_with(query=None)}"
        body = response.content.decode("utf-8", "replace")
        return where, f"{response.status_code}\n{head}\n\n{body}"

    def log_file(self, path: Path | None) -> None:
        if path is not None:
            self.files.add(path)

    # --- searching ----------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        for response in self.answers:
            answer = self._answer_text(response)
            if answer is not None:
                self.text(*answer)
        self.answers.clear()
        texts = list(self.texts.values())
        for path in sorted(self.files):
            if path.is_file():
                texts.append((f"the output of a child process ({path.name})", path.read_text()))
        index: dict[str, list[str]] = {}
        plain: list[str] = []
        for secret in self.secrets:
            longest = max(_PIECE.findall(secret), key=len, default="")
            if len(longest) >= WINDOW:
                index.setdefault(longest[:WINDOW], []).append(secret)
            else:
                plain.append(secret)
        found: list[Finding] = []
        for where, text in texts:
            candidates = set(_candidates(text, index))
            candidates.update(secret for secret in plain if secret in text)
            for secret in sorted(candidates):
                if secret in text:
                    found.append(self._finding(secret, where, text))
        return found

    def _finding(self, secret: str, where: str, text: str) -> Finding:
        at = text.index(secret)
        excerpt = text[max(0, at - 60) : at + len(secret) + 60]
        for other in self.secrets:
            excerpt = excerpt.replace(other, "<" + self.secrets[other] + ">")
        hint = f"{secret[:4]}..., {len(secret)} characters"
        return Finding(self.secrets[secret], hint, where, excerpt.replace("\n", "\\n"))


def _candidates(text: str, index: dict[str, list[str]]) -> Iterable[str]:
    for run in _RUN.finditer(text):
        value = run.group()
        for start in range(len(value) - WINDOW + 1):
            hits = index.get(value[start : start + WINDOW])
            if hits:
                yield from hits


def _plain(value: object) -> str | None:
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal):
        value = reveal()
    return value if isinstance(value, str) else None


class _Capture(logging.Handler):
    def __init__(self, scan: SecretScan) -> None:
        super().__init__(logging.DEBUG)
        self.scan = scan
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)  # with the exception's text, if any
            extra = {
                key: value
                for key, value in vars(record).items()
                if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
            }
            if extra:
                text += f"\n{extra!r}"
            self.scan.text(f"a log record of {record.name}", text)
        except Exception:  # noqa: BLE001 (a log handler must never fail the code that logs)
            self.handleError(record)


_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


# --- the hooks where secrets are made and texts leave -------------------------------------------


@dataclass
class _Patches:
    undo: list[Callable[[], None]] = field(default_factory=list)

    def wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name]
        setattr(owner, name, make(original))
        self.undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def _service_hooks(scan: SecretScan, patches: _Patches) -> None:
    from prometheus_client import generate_latest

    from bookingcache.bootstrap import Container
    from bookingcache.store.sql.credentials import SqlCredentials
    from bookingcache.store.sql.store import SqlStore
    from bookingcache.store.sql.subscriptions import SqlSubscriptions
    from bookingcache.tools.processes import Child

    def create_tenant(original: Any) -> Any:
        async def wrapper(self: Any, tenant: Any, secrets: Any, **kw: Any) -> Any:
            scan.secret(secrets.read_token, "a tenant's read token")
            scan.secret(secrets.signing_secret, "a tenant's signing secret")
            return await original(self, tenant, secrets, **kw)

        return wrapper

    def rotate(original: Any) -> Any:
        async def wrapper(self: Any, tenant_id: str, secret: str, *args: Any, **kw: Any) -> Any:
            scan.secret(secret, "a clientState")
            return await original(self, tenant_id, secret, *args, **kw)

        return wrapper

    def starting(original: Any) -> Any:
        def wrapper(self: Any) -> Any:
            graph = self.settings.sync.graph
            scan.secret(self.admin_token, "the admin token")
            if self.settings.secrets_key is not None:
                for key in self.settings.secrets_key.get_secret_value().split(","):
                    scan.secret(key.strip(), "a key of the secrets key")
            scan.secret(graph.client_secret, "the service's Graph client secret")
            return original(self)

        return wrapper

    def closing(original: Any) -> Any:
        async def wrapper(self: Any, **kw: Any) -> Any:
            scan.text("the service's /metrics", generate_latest(self.metrics).decode())
            return await original(self, **kw)

        return wrapper

    def child(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kw: Any) -> None:
            original(self, *args, **kw)
            scan.log_file(self.log)

        return wrapper

    def create_read_token(original: Any) -> Any:
        async def wrapper(self: Any, tenant_id: str, name: str, token: str) -> Any:
            scan.secret(token, "a named read token")
            return await original(self, tenant_id, name, token)

        return wrapper

    def sealing_graph(original: Any) -> Any:
        def wrapper(self: Any, credential: Any) -> Any:
            if credential is not None:
                scan.secret(credential.client_secret, "a tenant's Graph client secret")
                scan.secret(credential.private_key, "a tenant's Graph certificate key")
            return original(self, credential)

        return wrapper

    def rotate_signing(original: Any) -> Any:
        async def wrapper(self: Any, tenant_id: str, secret: str, **kw: Any) -> Any:
            scan.secret(secret, "a tenant's rotated signing secret")
            return await original(self, tenant_id, secret, **kw)

        return wrapper

    patches.wrap(SqlStore, "create_tenant", create_tenant)
    patches.wrap(SqlCredentials, "create_read_token", create_read_token)
    patches.wrap(SqlCredentials, "rotate_signing_secret", rotate_signing)
    patches.wrap(SqlCredentials, "sealed_graph_credential", sealing_graph)
    patches.wrap(SqlSubscriptions, "rotate_client_state", rotate)
    patches.wrap(Container, "start_service", starting)
    patches.wrap(Container, "start_worker", starting)
    patches.wrap(Container, "close", closing)
    patches.wrap(Child, "__init__", child)


def _connector_hooks(scan: SecretScan, patches: _Patches) -> None:
    from bookingcache_connector.auth import MsalTokenProvider
    from bookingcache_connector.relay import Relay
    from bookingcache_connector.signing import Signer, Verifier

    def keyed(original: Any) -> Any:
        def wrapper(self: Any, secret: str, *args: Any, **kw: Any) -> None:
            scan.secret(secret, "the connector's webhook secret")
            original(self, secret, *args, **kw)

        return wrapper

    def tokens(original: Any) -> Any:
        def wrapper(self: Any, settings: Any, *args: Any, **kw: Any) -> None:
            scan.secret(settings.client_secret, "the connector's Graph client secret")
            original(self, settings, *args, **kw)

        return wrapper

    def relay(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kw: Any) -> None:
            states = list(kw.get("client_states", ()))
            for state in states:
                scan.secret(state, "a clientState")
            kw["client_states"] = states
            original(self, *args, **kw)

        return wrapper

    patches.wrap(Signer, "__init__", keyed)
    patches.wrap(Verifier, "__init__", keyed)
    patches.wrap(MsalTokenProvider, "__init__", tokens)
    patches.wrap(Relay, "__init__", relay)


def _client_hooks(scan: SecretScan, patches: _Patches) -> None:
    def sending(original: Any) -> Any:
        def wrapper(self: Any, request: httpx.Request, **kw: Any) -> httpx.Response:
            response: httpx.Response = original(self, request, **kw)
            if not kw.get("stream"):
                scan.answer(response)
            return response

        return wrapper

    def sending_async(original: Any) -> Any:
        async def wrapper(self: Any, request: httpx.Request, **kw: Any) -> httpx.Response:
            response: httpx.Response = await original(self, request, **kw)
            if not kw.get("stream"):
                scan.answer(response)
            return response

        return wrapper

    patches.wrap(httpx.Client, "send", sending)
    patches.wrap(httpx.AsyncClient, "send", sending_async)


class SecretsScanPlugin:
    def __init__(self) -> None:
        self.scan = SecretScan()
        self.findings: list[Finding] = []
        self._patches = _Patches()
        self._handler = _Capture(self.scan)
        self._root_level = logging.getLogger().level

    def pytest_configure(self, config: pytest.Config) -> None:
        root = logging.getLogger()
        root.addHandler(self._handler)
        if root.level == logging.NOTSET or root.level > LOG_LEVEL:
            root.setLevel(LOG_LEVEL)
        _service_hooks(self.scan, self._patches)
        _connector_hooks(self.scan, self._patches)
        _client_hooks(self.scan, self._patches)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.findings = self.scan.findings()
        if self.findings and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        scan = self.scan
        if self.findings:
            terminalreporter.section("secrets left the service", red=True, bold=True)
            for finding in self.findings:
                terminalreporter.write_line(str(finding))
        else:
            terminalreporter.write_line(
                f"secrets scan: {len(scan.secrets)} secrets, {len(scan.texts)} texts, "
                f"{len(scan.files)} child logs: no secret found in any"
            )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        root.setLevel(self._root_level)
        self._patches.restore()


def install(config: pytest.Config) -> None:
    """Register the plugin for this session unless it already is."""
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(SecretsScanPlugin(), PLUGIN_NAME)
