"""The address policy for source downloads, enforced where the socket is opened.

The check runs inside the HTTP client's network backend: the name is resolved once, every address it
resolves to is checked, and the connection is made to exactly those checked addresses. A name whose
DNS answer changes between a check and a connect (DNS rebinding) therefore cannot slip through, and a
redirect to another host is checked the same way because it opens a new connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from capability_service.sources.errors import SourceError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Resolves a host name to its addresses, in the order they should be tried.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order; the first match names the kind of address in the refusal message.
_IPV4_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("192.0.0.0/24"), "reserved"),
    (_V4("192.0.2.0/24"), "reserved (documentation)"),
    (_V4("198.51.100.0/24"), "reserved (documentation)"),
    (_V4("203.0.113.0/24"), "reserved (documentation)"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay)"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_IPV6_REFUSED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fc00::/7"), "private"),
    (_V6("fec0::/10"), "private (site-local)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "private (local NAT64)"),
    (_V6("100::/64"), "reserved (discard)"),
    (_V6("2001:db8::/32"), "reserved (documentation)"),
    (_V6("3fff::/20"), "reserved (documentation)"),
)

# IPv6 forms that carry an IPv4 address inside: they are judged by the IPv4 address they reach.
_NAT64 = _V6("64:ff9b::/96")
_IPV4_COMPATIBLE = _V6("::/96")
_GLOBAL_UNICAST = _V6("2000::/3")


def refused_kind(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address (e.g. `"private"`), or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "link-local"
        if address.teredo is not None:
            # Teredo tunnels reach whatever the relay reaches; nothing a source needs.
            return "reserved (Teredo)"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return refused_kind(embedded)
        for network6, kind in _IPV6_REFUSED:
            if address in network6:
                return kind
        if address not in _GLOBAL_UNICAST:
            return "reserved"
        return None
    for network4, kind in _IPV4_REFUSED:
        if address in network4:
            return kind
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_address(text: str) -> IPAddress | None:
    """The address in `text` (a literal, maybe in brackets or with a zone), or None for a name."""
    candidate = text.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses sources may be downloaded from.

    `allow_private` turns the check off (for development against local servers). `exempt` lists
    networks that stay reachable while the check is on, e.g. one internal image host.
    """

    allow_private: bool = False
    exempt: tuple[IPNetwork, ...] = field(default_factory=tuple)

    def check(self, host: str, address: IPAddress) -> None:
        """Raise `SourceError(rule="private-address")` unless `address` may be connected to."""
        if self.allow_private or any(address in network for network in self.exempt):
            return
        kind = refused_kind(address)
        if kind is None:
            return
        embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        shown = f"{address} (IPv4 {embedded})" if embedded is not None else str(address)
        article = "an" if kind[0] in "aeiou" else "a"
        if parse_address(host) is not None:
            message = f"{shown} is {article} {kind} address; sources must be on the public internet"
        else:
            message = f"{host} resolves to {article} {kind} address {shown}"
        raise SourceError(message, rule="private-address")


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of `host` from the system resolver, without duplicates, in the resolver's order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that resolves, checks, then connects to the checked address only."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self.resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, limit: float | None) -> list[IPAddress]:
        literal = parse_address(host)
        if literal is not None:
            return [literal]
        try:
            async with asyncio.timeout(limit):
                names = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise httpcore.ConnectError(f"resolving {host} failed for now: {exc.strerror}") from None
            raise SourceError(f"host {host} does not resolve", rule="dns") from None
        except UnicodeError:
            # The IDNA codec refuses empty labels and labels over 63 characters.
            shown = host if len(host) <= 80 else host[:77] + "..."
            raise SourceError(f"{shown} is not a valid host name", rule="url") from None
        addresses = [address for address in (parse_address(name) for name in names) if address is not None]
        if not addresses:
            raise SourceError(f"host {host} does not resolve", rule="dns")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        # Every answer is checked before any is tried: a name with one public and one private
        # address is refused rather than depending on which one happens to answer first.
        for address in addresses:
            self.policy.check(host, address)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise SourceError("unix sockets are never a source", rule="scheme")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


def _as_httpx(exc: Exception) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc))
    if isinstance(exc, httpcore.TimeoutException):
        return httpx.TimeoutException(str(exc))
    if isinstance(exc, httpcore.NetworkError | httpcore.ProtocolError):
        return httpx.TransportError(str(exc))
    return exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            raise _as_httpx(exc) from exc

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection goes through `GuardedBackend`.

    Proxies are deliberately unsupported: through a proxy the service would no longer know which
    address it is really reaching.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 32,
        keepalive_expiry: float = 15.0,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _as_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """`["10.1.2.0/24", "fd00::1"]` as networks; raises ValueError naming a bad entry."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {value!r}") from None
    return tuple(networks)
