"""The image downloader against a local aiohttp server: limits, allow-list, redirects, sniffing.

Traffic goes to 127.0.0.1 only; URLs off the allow-list must not reach the server at all.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from PIL import Image

from dahell.fetch import (
    FetchFailed,
    FetchLimits,
    ImageFetcher,
    address_refused,
    check_url,
    explicit_addresses,
    make_session,
)
from dahell.reasons import TRANSIENT_EMBED_FAILURES


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


BAD_LOCATIONS = [
    "http://127.0.0.1\\@evil.example/x.jpg",  # backslash in the authority
    "http://evil\\example.com/x.jpg",
    "http://[::1/x.jpg",
    "http://127.0.0.1:99999/x.jpg",
]


class Server:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.sent = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path_qs] += 1
        path = request.path
        if path == "/ok.jpg":
            return web.Response(body=jpeg(), content_type="image/jpeg")
        if path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            raise web.HTTPFound(f"/hop/{n - 1}" if n > 1 else "/ok.jpg")
        if path == "/to-other-port":
            raise web.HTTPMovedPermanently(f"http://127.0.0.1:{self.port + 1}/ok.jpg")
        if path == "/to-localhost":
            raise web.HTTPTemporaryRedirect(self.url("/ok.jpg", host="localhost"))
        if path.startswith("/to-name/"):  # a name that resolves to 127.0.0.1, on another port
            raise web.HTTPFound(f"http://localhost:{path.rsplit('/', 1)[1]}/ok.jpg")
        if path.startswith("/to-bad/"):  # set by hand: aiohttp's own redirects parse the URL
            location = BAD_LOCATIONS[int(path.rsplit("/", 1)[1])]
            return web.Response(status=302, headers={"Location": location})
        if path == "/to-file":
            raise web.HTTPFound("file:///etc/passwd")
        if path == "/json":
            return web.json_response({"error": "nope"}, content_type="image/png")
        if path == "/endless":  # HTML that never ends: sniffing must stop it early
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            await resp.prepare(request)
            try:
                for _ in range(10_000):
                    await resp.write(b"<html>" + b" " * 65_530)
                    self.sent += 1
            except (ConnectionResetError, RuntimeError):
                pass
            return resp
        if path.startswith("/status/"):
            return web.Response(status=int(path.rsplit("/", 1)[1]))
        return web.Response(status=404)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    await srv.start()
    yield srv
    assert srv.runner is not None
    await srv.runner.cleanup()


@pytest.fixture
async def fetcher() -> AsyncIterator[ImageFetcher]:
    session = make_session(4, 2.0)
    yield ImageFetcher(session, FetchLimits.build(2.0, 1024 * 1024, 3, ["127.0.0.1"]))
    await session.close()


async def failure(fetcher: ImageFetcher, url: str) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(url)
    return caught.value


async def test_an_image_is_returned_after_a_few_redirects(
    fetcher: ImageFetcher, server: Server
) -> None:
    assert await fetcher.fetch(server.url("/hop/3")) == jpeg()
    assert await fetcher.fetch(server.url("/ok.jpg")) == jpeg()


async def test_more_redirects_than_allowed_are_refused(
    fetcher: ImageFetcher, server: Server
) -> None:
    err = await failure(fetcher, server.url("/hop/4"))
    assert (err.reason, err.transient) == ("too_many_redirects", False)
    assert server.requests["/ok.jpg"] == 0


@pytest.mark.parametrize("index", range(len(BAD_LOCATIONS)))
async def test_a_redirect_to_an_unparsable_location_is_a_final_invalid_url(
    fetcher: ImageFetcher, server: Server, index: int
) -> None:
    err = await failure(fetcher, server.url(f"/to-bad/{index}"))
    assert (err.reason, err.transient) == ("invalid_url", False)
    assert err.reason not in TRANSIENT_EMBED_FAILURES
    assert BAD_LOCATIONS[index][:20] in err.detail
    assert sum(server.requests.values()) == 1  # nothing was followed


async def test_redirects_off_the_allow_list_are_refused_before_connecting(
    server: Server,
) -> None:
    session = make_session(4, 2.0)
    limits = FetchLimits.build(2.0, 1024 * 1024, 3, [f"127.0.0.1:{server.port}"])
    try:
        fetcher = ImageFetcher(session, limits)
        assert await fetcher.fetch(server.url("/ok.jpg")) == jpeg()  # host:port entry matches
        for path, reason in (
            ("/to-other-port", "host_not_allowed"),
            ("/to-localhost", "host_not_allowed"),
            ("/to-file", "scheme_not_allowed"),
        ):
            assert (await failure(fetcher, server.url(path))).reason == reason
        err = await failure(fetcher, server.url("/ok.jpg?direct", host="localhost"))
        assert err.reason == "host_not_allowed"
    finally:
        await session.close()
    assert server.requests["/ok.jpg"] == 1
    assert server.requests["/ok.jpg?direct"] == 0


def test_the_allow_list_matches_hosts_exactly() -> None:
    allowed = frozenset({"cdn.example.com", "127.0.0.1:8080"})
    assert check_url("https://CDN.example.com/a.jpg", allowed).host == "cdn.example.com"
    assert check_url("http://127.0.0.1:8080/a.jpg", allowed).port == 8080
    for url, reason in (
        ("https://evil.cdn.example.com/a.jpg", "host_not_allowed"),
        ("https://cdn.example.com.evil.net/a.jpg", "host_not_allowed"),
        ("http://127.0.0.1:8081/a.jpg", "host_not_allowed"),
        ("http://127.0.0.1/a.jpg", "host_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("data:image/png;base64,AAAA", "scheme_not_allowed"),
        ("ftp://cdn.example.com/a.jpg", "scheme_not_allowed"),
        ("javascript:alert(1)", "scheme_not_allowed"),
        ("http:///a.jpg", "invalid_url"),
        ("not a url", "scheme_not_allowed"),
    ):
        with pytest.raises(FetchFailed) as caught:
            check_url(url, allowed)
        assert caught.value.reason == reason, url


async def test_statuses_map_to_reasons_and_retryability(
    fetcher: ImageFetcher, server: Server
) -> None:
    expected = {404: False, 403: False, 410: False, 500: True, 502: True, 503: True, 429: True}
    for status, transient in expected.items():
        err = await failure(fetcher, server.url(f"/status/{status}"))
        assert (err.reason, err.transient) == (f"http_{status}", transient)


async def test_a_body_that_is_no_image_is_refused_early_whatever_its_type(
    fetcher: ImageFetcher, server: Server
) -> None:
    assert (await failure(fetcher, server.url("/json"))).reason == "not_an_image"
    err = await failure(fetcher, server.url("/endless"))
    assert err.reason == "not_an_image" and "image/jpeg" in err.detail
    await asyncio.sleep(0.2)
    assert server.sent < 100  # the stream was dropped, not read to the end


async def test_a_closed_port_is_a_transient_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = make_session(2, 1.0)
    try:
        fetcher = ImageFetcher(session, FetchLimits.build(2.0, 1024, 0, ["127.0.0.1"]))
        err = await failure(fetcher, f"http://127.0.0.1:{port}/x.jpg")
    finally:
        await session.close()
    assert (err.reason, err.transient) == ("connection_error", True)


# --- the resolved address -------------------------------------------------------------------


async def test_an_allowed_name_that_resolves_to_loopback_is_refused_at_connect(
    server: Server,
) -> None:
    session = make_session(4, 2.0)
    try:
        fetcher = ImageFetcher(
            session, FetchLimits.build(2.0, 1024 * 1024, 3, [f"localhost:{server.port}"])
        )
        err = await failure(fetcher, server.url("/ok.jpg?by-name", host="localhost"))
    finally:
        await session.close()
    assert (err.reason, err.transient) == ("address_not_allowed", False)
    assert "127.0.0.1" in err.detail or "::1" in err.detail
    assert server.requests["/ok.jpg?by-name"] == 0


async def test_an_address_allowed_as_an_ip_literal_may_be_reached_by_name(
    server: Server,
) -> None:
    session = make_session(4, 2.0)
    hosts = ["localhost", "127.0.0.1", "::1"]
    try:
        fetcher = ImageFetcher(session, FetchLimits.build(2.0, 1024 * 1024, 3, hosts))
        assert await fetcher.fetch(server.url("/ok.jpg", host="localhost")) == jpeg()
    finally:
        await session.close()


async def test_a_redirect_to_a_name_resolving_to_a_private_address_is_refused(
    server: Server,
) -> None:
    other = Server()
    await other.start()
    session = make_session(4, 2.0)
    hosts = [f"127.0.0.1:{server.port}", f"localhost:{other.port}"]
    try:
        fetcher = ImageFetcher(session, FetchLimits.build(2.0, 1024 * 1024, 3, hosts))
        err = await failure(fetcher, server.url(f"/to-name/{other.port}"))
    finally:
        await session.close()
        assert other.runner is not None
        await other.runner.cleanup()
    assert err.reason == "address_not_allowed"
    assert other.requests["/ok.jpg"] == 0


@pytest.mark.parametrize(
    ("address", "port", "refused"),
    [
        ("127.0.0.1", 80, True),
        ("10.1.2.3", 80, True),
        ("192.168.0.10", 443, True),
        ("172.16.5.4", 80, True),
        ("169.254.169.254", 80, True),  # cloud metadata
        ("100.64.0.1", 80, True),  # carrier-grade NAT
        ("0.0.0.0", 80, True),
        ("224.0.0.1", 80, True),
        ("240.0.0.1", 80, True),
        ("::1", 80, True),
        ("::", 80, True),
        ("fe80::1%2", 80, True),
        ("fd00::1", 80, True),
        ("ff02::1", 80, True),
        ("::ffff:10.0.0.1", 80, True),
        ("8.8.8.8", 443, False),
        ("2606:4700::6810:84e5", 443, False),
        ("10.9.9.9", 8080, False),  # allowed as "10.9.9.9:8080"
        ("10.9.9.9", 8081, True),
        ("192.168.7.7", 1, False),  # allowed as "192.168.7.7", any port
    ],
)
def test_which_resolved_addresses_are_refused(address: str, port: int, refused: bool) -> None:
    explicit = explicit_addresses(["cdn.example.com", "10.9.9.9:8080", "192.168.7.7"])
    assert address_refused(address, port, explicit) is refused
