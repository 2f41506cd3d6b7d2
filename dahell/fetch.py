"""The safe image downloader: one aiohttp session, limits, an allow-list, content sniffing.

`ImageFetcher.fetch(url)` returns the body of an image or raises `FetchFailed` with a reason code
from `dahell.reasons.EMBED_FAILURE_REASONS` and whether trying again later may help:

    reason                      transient   when
    invalid_url                 no          the URL cannot be parsed or has no host
    scheme_not_allowed          no          not http/https (file://, data:, ftp:, ...)
    host_not_allowed            no          host not in the allow-list (checked before any
                                            connection, for the first URL and every redirect)
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
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from dahell.embedder import sniff_image

__all__ = ["FetchFailed", "FetchLimits", "ImageFetcher", "check_url", "make_session"]

ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429})
CHUNK_BYTES = 64 * 1024
SNIFF_BYTES = 32
USER_AGENT = "dahell-vectorizer/0.1"


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


def make_session(concurrency: int, connect_timeout_s: float) -> aiohttp.ClientSession:
    """The vectorizer's one session: pooled connections, no cookies, no proxy from the env."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300
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
    except (ValueError, TypeError) as exc:
        raise FetchFailed("invalid_url", f"{str(url)[:200]}: {exc}") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        raise FetchFailed("scheme_not_allowed", f"scheme {scheme or '(none)'!r} in {_short(url)}")
    host = (parsed.host or "").lower()
    if not host:
        raise FetchFailed("invalid_url", f"no host in {_short(url)}")
    if host not in allowed_hosts and f"{_bracket(host)}:{parsed.port}" not in allowed_hosts:
        raise FetchFailed("host_not_allowed", f"host {host}:{parsed.port} is not allowed")
    return parsed


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
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await self._follow(first)
        except TimeoutError:
            raise FetchFailed(
                "timeout", f"no complete answer within {self.limits.timeout_s:g}s", transient=True
            ) from None
        except aiohttp.InvalidURL as exc:
            raise FetchFailed("invalid_url", str(exc)[:300]) from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise FetchFailed("connection_error", detail, transient=True) from None

    async def _follow(self, url: URL) -> bytes:
        seen = {str(url)}
        for _ in range(self.limits.max_redirects + 1):
            async with self.session.get(url, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECT_STATUSES and location:
                    url = check_url(url.join(URL(location)), self.limits.allowed_hosts)
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
