"""The safe image downloader: one aiohttp session, limits, an allow-list, content sniffing.

`ImageFetcher.fetch(url)` returns the body of an image or raises `FetchFailed` with a reason code
from `dahell.reasons.EMBED_FAILURE_REASONS` and whether trying again later may help:

    reason                      transient   when
    invalid_url                 no          the URL (or a redirect's Location) cannot be
                                            parsed or has no host
    scheme_not_allowed          no          not http/https (file://, data:, ftp:, ...)
    host_not_allowed            no          host not in the allow-list (checked before any
                                            connection, for the first URL and every redirect)
    address_not_allowed         no          the host resolved to a loopback, private,
                                            link-local, multicast, unspecified or reserved
                                            address that the allow-list does not name as an IP,
                                            or to an IPv6 form of one (IPv4-mapped ::ffff:0:0/96,
                                            NAT64 64:ff9b::/96 and 6to4 2002::/16 are judged by
                                            the IPv4 address they carry; IPv4-compatible ::/96,
                                            local NAT64 64:ff9b:1::/48 and Teredo 2001::/32 are
                                            always refused)
    too_many_redirects          no          more than `max_redirects` hops, or a loop
    http_<status>               5xx, 429,   the final answer was not 2xx
                                408 only
    too_large                   no          Content-Length or the streamed body passed the cap
    not_an_image                no          the body's magic bytes are no image format
    timeout                     yes         the whole fetch (redirects included) took too long
    connection_error            yes         DNS, refused, reset, broken body

Allow-list entries are host names or IP addresses (any port: "cdn.example.com", "127.0.0.1") or
`host:port` (only that port: "127.0.0.1:8080"); matching is exact and case-insensitive, never by
suffix. Redirects are followed by hand so that each hop is checked like the first URL.

The address a name resolves to is checked when the socket is made, just before it connects
(the session's `socket_factory`), so no DNS answer can change between check and connect, and
every hop and every address tried is covered. Only public addresses are reached, unless the
allow-list names the address itself as an IP literal ("127.0.0.1", "127.0.0.1:8080",
"[::1]:8080"): then any allowed name resolving to it may be fetched (the tests and the demo's
simulated CDN on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import aiohttp
from yarl import URL

from dahell.image_decode import sniff_image

__all__ = [
    "FetchFailed",
    "FetchLimits",
    "ImageFetcher",
    "address_refused",
    "check_url",
    "explicit_addresses",
    "make_session",
]

ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429})
CHUNK_BYTES = 64 * 1024
SNIFF_BYTES = 32
USER_AGENT = "dahell-vectorizer/0.1"
#: IPv6 forms refused whatever they carry: IPv4-compatible (::/96, deprecated, `::127.0.0.1`),
#: local-use NAT64 (where the IPv4 part sits depends on the site) and Teredo (a tunnel to any
#: IPv4 host). Python's `is_global` calls some of them global.
_TUNNELS_REFUSED = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "64:ff9b:1::/48", "2001::/32"))
#: IPv6 forms whose last 32 bits are the IPv4 host reached: well-known NAT64, IPv4-translated.
_IPV4_SUFFIXED = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96"))


class FetchFailed(Exception):
    """A download that gave no image; `reason` is a stable code, `transient` says retry may help."""

    def __init__(self, reason: str, detail: str = "", *, transient: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.transient = transient


@dataclass(frozen=True)
class FetchLimits:
    """What one fetch may do; built from `vectorizer.*` settings."""

    timeout_s: float
    max_bytes: int
    max_redirects: int
    allowed_hosts: frozenset[str]

    @classmethod
    def build(
        cls, timeout_s: float, max_bytes: int, max_redirects: int, allowed_hosts: Iterable[str]
    ) -> FetchLimits:
        hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        return cls(timeout_s, max_bytes, max_redirects, hosts)

    @cached_property
    def explicit(self) -> frozenset[tuple[str, int | None]]:
        """The allow-list's IP literals: the only non-public addresses that may be reached."""
        return explicit_addresses(self.allowed_hosts)


Explicit = frozenset[tuple[str, int | None]]


def explicit_addresses(hosts: Iterable[str]) -> Explicit:
    """(address, port or None for any) for each allow-list entry that is an IP literal."""
    found = set()
    for entry in hosts:
        text = entry.strip().lower()
        host, port = text, None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest[1:].isdigit() else None
        elif text.count(":") == 1:
            host, _, tail = text.partition(":")
            port = int(tail) if tail.isdigit() else None
        try:
            found.add((str(ipaddress.ip_address(host)), port))
        except ValueError:
            continue  # a name: it may be fetched only where it resolves to a public address
    return frozenset(found)


def address_refused(address: str, port: int, explicit: Explicit) -> bool:
    """Whether a resolved address may not be connected to (not public, not named explicitly)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (str(ip), None) in explicit or (str(ip), port) in explicit:
        return False
    return not _public(ip)


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global unicast, and for an IPv6 form that carries an IPv4 address, that one too."""
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return True
    if any(ip in net for net in _TUNNELS_REFUSED):
        return False
    embedded = _embedded_ipv4(ip)
    return embedded is None or _public(embedded)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64, IPv4-translated or 6to4 address leads to (the host reached)."""
    if any(ip in net for net in _IPV4_SUFFIXED):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


class AddressNotAllowed(OSError):
    """Raised by the socket factory for a refused address (never leaves this module)."""


@dataclass
class _Guard:
    """One fetch's view of the connect-time check: what may be reached, what was refused."""

    explicit: Explicit
    tried: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


# Set by ImageFetcher.fetch; the socket factory runs in the fetch's task (or a copy of its context).
_guard: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("fetch_guard", default=None)


def _guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """The session's socket factory: refuse an address before the socket connects to it."""
    family, type_, proto, _, sockaddr = addr_info
    address, port = str(sockaddr[0]), int(sockaddr[1])
    guard = _guard.get()
    if guard is not None:
        guard.tried.append(f"{address}:{port}")
    if address_refused(address, port, guard.explicit if guard is not None else frozenset()):
        if guard is not None:
            guard.refused.append(f"{address}:{port}")
        raise AddressNotAllowed(f"address {address}:{port} is not allowed")
    return socket.socket(family=family, type=type_, proto=proto)


def make_session(concurrency: int, connect_timeout_s: float) -> aiohttp.ClientSession:
    """The vectorizer's one session: pooled connections, no cookies, no proxy from the env."""
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=concurrency,
        ttl_dns_cache=300,
        socket_factory=_guarded_socket,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
        trust_env=False,
    )


def check_url(url: str | URL, allowed_hosts: frozenset[str]) -> URL:
    """The parsed URL if its scheme and host may be fetched; `FetchFailed` otherwise."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        scheme, host, port = (parsed.scheme or "").lower(), (parsed.host or "").lower(), parsed.port
    except (ValueError, TypeError) as exc:
        raise FetchFailed("invalid_url", f"{_short(url)}: {exc}") from None
    if scheme not in ALLOWED_SCHEMES:
        raise FetchFailed("scheme_not_allowed", f"scheme {scheme or '(none)'!r} in {_short(url)}")
    if not host:
        raise FetchFailed("invalid_url", f"no host in {_short(url)}")
    if host not in allowed_hosts and f"{_bracket(host)}:{port}" not in allowed_hosts:
        raise FetchFailed("host_not_allowed", f"host {host}:{port} is not allowed")
    return parsed


def _redirect_target(base: URL, location: str) -> URL:
    """Where a redirect leads; `invalid_url` (final) for a Location yarl refuses (a backslash
    in the authority, a bad IPv6 literal, a port out of range), not an uncaught ValueError."""
    try:
        return base.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise FetchFailed("invalid_url", f"redirect to {_short(location)}: {exc}") from None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _short(url: str | URL) -> str:
    text = str(url)
    return text if len(text) <= 200 else text[:200] + "..."


class ImageFetcher:
    """Downloads image bytes through a shared session under `FetchLimits`."""

    def __init__(self, session: aiohttp.ClientSession, limits: FetchLimits) -> None:
        self.session = session
        self.limits = limits

    async def fetch(self, url: str) -> bytes:
        """The image's bytes, or `FetchFailed` (see the module doc for the reasons)."""
        first = check_url(url, self.limits.allowed_hosts)
        guard = _Guard(self.limits.explicit)
        token = _guard.set(guard)
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await self._follow(first, guard)
        except aiohttp.ClientConnectorError as exc:
            if guard.refused and len(guard.refused) == len(guard.tried):
                detail = f"{exc.host} resolved to {', '.join(guard.refused)}: not a public address"
                raise FetchFailed("address_not_allowed", detail[:300]) from None
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise FetchFailed("connection_error", detail, transient=True) from None
        except TimeoutError:
            raise FetchFailed(
                "timeout", f"no complete answer within {self.limits.timeout_s:g}s", transient=True
            ) from None
        except aiohttp.InvalidURL as exc:
            raise FetchFailed("invalid_url", str(exc)[:300]) from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise FetchFailed("connection_error", detail, transient=True) from None
        finally:
            _guard.reset(token)

    async def _follow(self, url: URL, guard: _Guard) -> bytes:
        seen = {str(url)}
        for _ in range(self.limits.max_redirects + 1):
            guard.tried.clear()  # each hop's addresses are judged alone
            guard.refused.clear()
            async with self.session.get(url, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECT_STATUSES and location:
                    url = check_url(_redirect_target(url, location), self.limits.allowed_hosts)
                    if str(url) in seen:
                        raise FetchFailed("too_many_redirects", f"redirect loop back to {url}")
                    seen.add(str(url))
                    continue
                return await self._read(resp)
        raise FetchFailed(
            "too_many_redirects", f"more than {self.limits.max_redirects} redirects, last {url}"
        )

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        if not 200 <= resp.status < 300:
            transient = resp.status >= 500 or resp.status in TRANSIENT_STATUSES
            raise FetchFailed(f"http_{resp.status}", resp.reason or "", transient=transient)
        cap = self.limits.max_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise FetchFailed("too_large", f"Content-Length {resp.content_length} > {cap} bytes")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            body += chunk
            if len(body) > cap:
                raise FetchFailed("too_large", f"body passed {cap} bytes")
            if len(body) >= SNIFF_BYTES and len(body) - len(chunk) < SNIFF_BYTES:
                _sniff(body, resp)
        data = bytes(body)
        _sniff(data, resp)
        return data


def _sniff(data: bytes | bytearray, resp: aiohttp.ClientResponse) -> None:
    """Refuse a body that is no image, whatever its Content-Type says (checked early and at end)."""
    if sniff_image(bytes(data[:SNIFF_BYTES])) is None:
        kind = resp.headers.get("Content-Type", "no Content-Type")
        raise FetchFailed("not_an_image", f"{kind}, starts with {bytes(data[:8]).hex()}")
