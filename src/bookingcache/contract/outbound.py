"""Where the service may send requests: the rules for outbound URLs (a tenant's connector, the
notification and lifecycle URLs handed to it, Graph's) and their check at connection time.

Outside development an outbound URL must be ``https``, name a host, carry no user information
(credentials) and no fragment; a tenant's connector must moreover be a public host: loopback,
link-local (the cloud metadata address 169.254.169.254 among them), private, shared, unspecified,
multicast and reserved addresses are refused, whether written literally (IPv4-mapped IPv6
included) or, at connection time, as what a name resolves to. ``localhost`` names and numeric
hosts that are not plain addresses are refused as written. In development (the demo, the tests)
``http`` and every host are allowed.

``check_url`` is the pure check of a URL as written. ``GuardedTransport`` is the httpx transport
of a client that reaches tenant-chosen hosts: it resolves a host once, refuses the connection
unless every address is allowed, and connects to a checked address, so a name that resolves to
an internal address (or is changed to after the URL was accepted) is never reached.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpcore

from bookingcache.contract.pool import PooledTransport, SocketStreams
from bookingcache.errors import UpstreamError

URL_NOT_ALLOWED = "url-not-allowed"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# NAT64 (RFC 6052) embeds an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# A host made of digits, dots and hex prefixes but not a plain address (``127.1``, ``2130706433``,
# ``0x7f.1``): resolvers read these as IPv4 addresses in forms people do not recognise.
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """``require_https``: plain http is refused; ``public_only``: a tenant-chosen host must be
    publicly routable."""

    require_https: bool
    public_only: bool

    @classmethod
    def for_environment(
        cls, environment: Literal["development", "staging", "production"]
    ) -> OutboundPolicy:
        strict = environment != "development"
        return cls(require_https=strict, public_only=strict)


DEVELOPMENT = OutboundPolicy(require_https=False, public_only=False)
PRODUCTION = OutboundPolicy(require_https=True, public_only=True)


class UrlNotAllowed(UpstreamError):
    """An outbound URL, or an address its host resolves to, that the policy refuses."""

    default_kind = URL_NOT_ALLOWED


def address_problem(address: Address) -> str | None:
    """Why ``address`` may not be called from a tenant's setting, or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            problem = address_problem(embedded)
            return None if problem is None else f"{problem} (embedded in {address})"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address (where cloud metadata services answer)"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_private:
        return f"{address} is a private address"
    if address.is_reserved or not address.is_global:
        return f"{address} is not a public address"
    return None


def host_problem(host: str) -> str | None:
    """Why ``host`` (a name or a literal address, as written in a URL) may not be called from a
    tenant's setting; a name's addresses are checked when it is resolved (``GuardedTransport``)."""
    name = host.strip("[]").rstrip(".").casefold()
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return address_problem(address)
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} names this machine"
    if _NUMERIC_HOST.fullmatch(name):
        return f"{host} is a numeric host that is not a plain IP address"
    return None


def check_url(url: str, policy: OutboundPolicy, *, public: bool = True) -> str | None:
    """Why ``policy`` refuses ``url``, or None. ``public``: the host must also be a public one
    (a tenant's connector and what is handed to it; not an operator's own Graph endpoint)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "it must be an absolute http:// or https:// URL"
    if not hostname:
        return "it names no host"
    if not policy.require_https and not policy.public_only:
        return None
    if policy.require_https and parts.scheme != "https":
        return "it must use https"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "it must not carry a user name or password"
    if parts.fragment or url.endswith("#"):
        return "it must not have a fragment"
    if public and policy.public_only:
        return host_problem(hostname)
    return None


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The addresses ``host`` resolves to, by the system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the check of what a host resolves to: the host is
    resolved once, every address checked, and the connection made to a checked address (TLS
    still verifies the certificate for the host's name)."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int, *, limit_s: float | None = None) -> list[str]:
        """The checked addresses of ``host``; ``UrlNotAllowed`` if any of them is refused."""
        problem = host_problem(host)
        if problem is not None:
            raise UrlNotAllowed(f"outbound connection refused: {problem}")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            return [str(literal)]
        try:
            found = await asyncio.wait_for(self._resolver(host, port), limit_s)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} could not be resolved") from exc
        if not found:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        checked: list[str] = []
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            problem = address_problem(address)
            if problem is not None:
                raise UrlNotAllowed(f"outbound connection to {host} refused: {problem}")
            checked.append(str(address))
        return checked

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self.addresses(host, port, limit_s=timeout):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowed("outbound connections over a unix socket are refused")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(PooledTransport):
    """httpx's own transport (no proxies from the environment) over ``GuardedBackend``."""

    def __init__(
        self, *, verify: ssl.SSLContext | bool = True, resolver: Resolver = system_resolver
    ) -> None:
        backend = GuardedBackend(resolver=resolver, inner=SocketStreams())
        super().__init__(verify=verify, backend=backend)
