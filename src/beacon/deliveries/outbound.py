"""HTTP to URLs that others chose (webhook endpoints, push endpoints, providers), made safe.

A URL a customer or a browser gives could point inside the network Beacon runs in (a cloud's
metadata service, an admin port). So every connection resolves its host name here, refuses it
if any address is loopback, private, link-local, multicast, reserved, unspecified or otherwise
not global (IPv4, IPv6, and IPv4 inside IPv6: mapped, 6to4, Teredo, NAT64) unless the policy
allows that network, and connects to the address it checked (no second look-up a DNS answer
could change in between). Redirects are followed here, a few at most, each one through the same
check. Every exchange is bounded in time as a whole (`timeout`, 30 s) and keeps the first bytes
of the answer (`excerpt_limit`) and how long it took.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundError(Exception):
    """A request that got no HTTP answer; `permanent` when trying again cannot help."""

    permanent = False

    def __init__(self, message: str, *, latency_ms: float | None = None) -> None:
        super().__init__(message)
        self.latency_ms = latency_ms


class OutboundRefused(OutboundError):
    """A destination Beacon will not contact: an internal address, a bad URL, a redirect loop."""

    permanent = True


class OutboundFailed(OutboundError):
    """No answer this time: DNS, connection, TLS or the time limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundPolicy:
    """Which internal networks may be contacted anyway, and the bounds of one exchange."""

    allow: tuple[IPNetwork, ...] = ()
    timeout: float = 30.0
    max_redirects: int = 3
    excerpt_limit: int = 2048

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_redirects < 0 or self.excerpt_limit < 0:
            raise ValueError("timeout must be positive, max_redirects and excerpt_limit >= 0")


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """The answer: status, headers (lower-case names), the first bytes as text, the latency."""

    status: int
    headers: Mapping[str, str]
    excerpt: str
    latency_ms: float
    url: str
    redirects: tuple[str, ...]


def allow_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Read networks an operator allows (`10.0.0.0/8`, `::1`), naming a bad one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP network (like 10.0.0.0/8 or ::1)") from None
    return tuple(networks)


def refusal(address: IPAddress, *, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Return why `address` may not be contacted (e.g. "loopback"), or None if it may."""
    embedded = _embedded_ipv4(address)
    allowed = tuple(allow)
    candidates = [address, *embedded]
    if any(ip in net for ip in candidates for net in allowed if ip.version == net.version):
        return None
    # An IPv6 address carrying an IPv4 one reaches that IPv4 address: judge what it reaches.
    judged: list[IPAddress] = [*embedded] or [address]
    for ip in judged:
        reason = _kind_of_internal(ip)
        if reason is not None:
            return reason
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [ip for ip in found if ip is not None]


def _kind_of_internal(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-global"
    return None


async def check_destination(
    url: str, *, allow: Iterable[IPNetwork] = (), resolver: Resolver | None = None
) -> None:
    """Refuse a URL Beacon would not send to (not http(s), a host resolving to an internal
    address: `OutboundRefused`) or cannot reach (a host that does not resolve:
    `OutboundFailed`); the same check every connection makes, made when the URL is saved."""
    _check_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        found = await (resolver or _system_resolver)(host, parts.port or 443)
    except OSError as failed:
        raise OutboundFailed(f"{host} does not resolve: {failed}") from None
    allowed = tuple(allow)
    for address in dict.fromkeys(ipaddress.ip_address(a) for a in found):
        reason = refusal(address, allow=allowed)
        if reason is not None:
            shown = host if host == str(address) else f"{host} resolves to {address}, which"
            raise OutboundRefused(f"{shown} is a {reason} address; Beacon does not send there")


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses `refusal` allows, and to exactly the addresses it checked."""

    def __init__(self, *, allow: tuple[IPNetwork, ...], resolve: Resolver) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow = allow
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            found = await self._resolve(host, port)
        except OSError as failed:
            raise httpcore.ConnectError(f"{host} did not resolve: {failed}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in found))
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            reason = refusal(address, allow=self._allow)
            if reason is not None:
                shown = host if host == str(address) else f"{host} resolves to {address}, which"
                raise OutboundRefused(f"{shown} is a {reason} address; Beacon does not send there")
        reasons = []
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                reasons.append(f"{address}: {failed or type(failed).__name__}")
        raise httpcore.ConnectError(f"cannot connect to {host} ({'; '.join(reasons)})")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("Beacon does not send to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, *, backend: _GuardedBackend, verify: ssl.SSLContext | bool) -> None:
        super().__init__(verify=verify, trust_env=False)
        # The stock pool with our network backend: every new connection passes the check.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=backend,
        )


class OutboundHttp:
    """An HTTP client for URLs Beacon does not control: checked, bounded, measured."""

    def __init__(
        self,
        *,
        policy: OutboundPolicy | None = None,
        verify: ssl.SSLContext | bool = True,
        resolver: Resolver | None = None,
        user_agent: str = "Beacon",
    ) -> None:
        self.policy = policy or OutboundPolicy()
        backend = _GuardedBackend(allow=self.policy.allow, resolve=resolver or _system_resolver)
        # trust_env off: a proxy from the environment would carry requests past the check.
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(backend=backend, verify=verify),
            timeout=self.policy.timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": user_agent},
        )

    async def __aenter__(self) -> OutboundHttp:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def post(
        self,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        auth: tuple[str, str] | None = None,
        read_limit: int | None = None,
    ) -> OutboundResponse:
        """POST `content` to `url`; raise `OutboundRefused` or `OutboundFailed` if no answer.

        The answer's first `read_limit` bytes are kept (default: the policy's excerpt limit; a
        provider whose JSON answer the caller reads asks for more).
        """
        started = time.perf_counter()
        limit = self.policy.excerpt_limit if read_limit is None else read_limit
        try:
            async with asyncio.timeout(self.policy.timeout):
                return await self._exchange(url, content, dict(headers), auth, started, limit)
        except TimeoutError:
            raise OutboundFailed(
                f"no answer within {self.policy.timeout:g} s", latency_ms=_since(started)
            ) from None
        except OutboundError as error:
            error.latency_ms = _since(started)
            raise
        except httpx.HTTPError as error:
            raise OutboundFailed(
                f"{type(error).__name__}: {error or 'no answer'}", latency_ms=_since(started)
            ) from None

    async def _exchange(
        self,
        url: str,
        content: bytes,
        headers: dict[str, str],
        auth: tuple[str, str] | None,
        started: float,
        limit: int,
    ) -> OutboundResponse:
        method, body, visited = "POST", content, [url]
        _check_url(url)
        while True:
            request = self._client.build_request(method, url, content=body, headers=headers)
            response = await self._client.send(request, stream=True, auth=auth)
            try:
                excerpt = await _read_excerpt(response, limit)
            finally:
                await response.aclose()
            location = response.headers.get("location")
            if response.status_code not in REDIRECTS or location is None:
                return OutboundResponse(
                    status=response.status_code,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    excerpt=excerpt,
                    latency_ms=_since(started),
                    url=url,
                    redirects=tuple(visited[1:]),
                )
            if len(visited) > self.policy.max_redirects:
                raise OutboundRefused(f"more than {self.policy.max_redirects} redirects")
            target = urljoin(url, location)
            _check_url(target)
            if _origin(target) != _origin(url):
                # As browsers and httpx do: credentials stay with the origin they were meant for.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                auth = None
            if response.status_code in (301, 302, 303):
                method, body = "GET", b""
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            url = target
            visited.append(url)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused(f"{url[:200]!r} is not an absolute http(s) URL")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


async def _read_excerpt(response: httpx.Response, limit: int) -> str:
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk[: limit - len(kept)]
        if len(kept) >= limit:
            break
    return kept.decode("utf-8", errors="replace")


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
