"""The status server against hostile requests (issue 17): values, errors, headers, health, slots.

The parameter table runs over every parameter of every route the router holds: a route added
without declaring its parameters (`dahell.http_params.route`) fails it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
import structlog
from yarl import URL

from dahell import config as config_mod
from dahell import similar
from dahell.http import StatusServer
from dahell.http_params import Param, params_of
from dahell.research import api as research_api
from dahell.supervisor import Supervisor
from tests.e2e.conftest import free_port

MakeConfig = Callable[..., config_mod.Config]
Serve = Callable[..., Any]

# Raw (already percent-encoded) values hostile to every kind of parameter.
EVERY_KIND = [
    "%00",
    "a%00b",
    "%ff%fe",  # not UTF-8
    "%ed%a0%80",  # an encoded surrogate
    "%c0%af",  # an overlong encoding of "/"
    "9" * 5000,
]
# Hostile values per kind, as text (percent-encoded when sent).
BY_KIND: dict[str, list[str]] = {
    "identifier": [
        "9223372036854775808",
        "99999999999999999999",
        "-1",
        "²",
        "١٢٣",
        "1e3",
        "0x10",
        "1.0",
        "+1",
        "1_000",
        "abc",
        " 1",
    ],
    "integer": [
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "²",
        "1e3",
        "1.5",
        "1_0",
        "ten",
        "١",
    ],
    "number": ["nan", "inf", "-inf", "1e309", "-1e999", "0x1p3", "1_0", "lots", "1e10", "²"],
    "timestamp": [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31",
        "0001-01-01",
        "2026-13-45",
        "2026-01-01T00:00:00+99:00",
        "yesterday",
        "1969-12-31",
    ],
    "choice": ["x", "SALES", "sales\x00"],
    "text": ["x" * 201, "\ufffd"],
    "static_name": ["..%2f..%2fetc%2fpasswd", ".hidden.js", "app.exe", "nothere.js"],
}
# A value that passes each kind: fills the other path parameters of a route.
GOOD_PATH_VALUE = {"identifier": "1", "static_name": "style.css"}


@pytest.fixture
async def serve(make_config: MakeConfig, pool: asyncpg.Pool) -> AsyncIterator[Serve]:
    """Start a status server (no stages) with config overrides; yields the server."""
    servers: list[StatusServer] = []

    async def start(**overrides: str) -> StatusServer:
        port = free_port()
        config = make_config(HTTP__LISTEN=f"127.0.0.1:{port}", **overrides)
        server = StatusServer(Supervisor(config, [], pool))
        await server.start()
        server.port = port  # type: ignore[attr-defined]
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def fetch(
    port: int, raw_path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """GET an already-encoded path; (status, JSON body or text, headers)."""
    url = URL(f"http://127.0.0.1:{port}{raw_path}", encoded=True)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url, headers=headers or {}) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, dict(resp.headers)


def encoded(value: str) -> str:
    """`value` percent-encoded, unless it is one of the raw escapes of EVERY_KIND."""
    return value if value in EVERY_KIND else quote(value, safe="")


def requests_for(path: str, params: dict[str, Param]) -> list[tuple[str, str, str, str]]:
    """(parameter, kind, value, raw path) for each hostile value of each parameter."""
    in_path = {name for name in params if "{" + name + "}" in path}
    cases = []
    for name, param in params.items():
        beyond = (
            [] if param.bounds is None else [_beyond(param.bounds, -1), _beyond(param.bounds, 1)]
        )
        for value in EVERY_KIND + BY_KIND[param.kind] + beyond:
            fill = {p: GOOD_PATH_VALUE[params[p].kind] for p in in_path}
            if name in in_path:
                fill[name] = encoded(value)
                raw = path.format(**fill)
            else:
                raw = path.format(**fill) + f"?{name}={encoded(value)}"
            cases.append((name, param.kind, value, raw))
    return cases


def _beyond(bounds: tuple[float, float], side: int) -> str:
    """Just below the lower bound (side -1) or above the upper one (side 1)."""
    value = bounds[0] - 1 if side < 0 else bounds[1] + 1
    return str(int(value)) if float(value).is_integer() else str(value)


@pytest.fixture
def error_logs(caplog: pytest.LogCaptureFixture) -> AsyncIterator[list[Any]]:
    """Every ERROR record logged meanwhile, from structlog or the standard `logging`."""
    caplog.set_level(logging.ERROR)
    with structlog.testing.capture_logs() as events:
        found: list[Any] = []
        yield found  # type: ignore[misc]
        found += [e for e in events if e.get("log_level") in ("error", "critical")]
        found += [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_hostile_values_on_every_parameter_of_every_route_are_400(
    serve: Serve, error_logs: list[Any]
) -> None:
    server = await serve()
    assert server.runner is not None
    routes = [r for r in server.runner.app.router.routes() if r.method == "GET"]
    undeclared = [r.resource.canonical for r in routes if params_of(r.handler) is None]
    assert undeclared == [], "routes registered without http_params.route"
    tried = 0
    for r in routes:
        params = params_of(r.handler) or {}
        for name, kind, value, raw in requests_for(r.resource.canonical, params):
            status, body, _ = await fetch(server.port, raw)
            where = (raw[:120], name, value[:40])
            if kind == "static_name":
                assert status == 404, where
                continue
            assert status == 400, (where, status, body)
            assert body["error"] == "invalid_parameter" and body["parameter"] == name, where
            assert body["detail"], where
            tried += 1
    assert tried > 200
    assert {r.resource.canonical for r in routes} >= {"/api/research", "/similar/{product_id}"}
    await asyncio.sleep(0)
    assert error_logs == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/similar/9223372036854775807", 404),
        ("/api/products/9223372036854775807", 404),
        ("/api/products/1?at=8998-12-31T23:59:59-23:59", 404),
        ("/api/research?offset=9223372036854775807&limit=500", 200),
        ("/api/research?at=2026-11-30T18:00-05:00&min_margin=-999999&category=Hogar", 200),
        ("/api/products?q=%25_%5C&limit=200", 200),
        ("/api/products?q=%C2%B2", 200),  # "²".isdigit(), but not an id
        ("/api/products?q=%D9%A1%D9%A2%D9%A3", 200),  # Arabic-Indic digits
        ("/similar/1?k=100", 404),
        ("/api/research?lang=es&unknown=%00", 200),
    ],
)
async def test_well_formed_edge_values_are_answered(serve: Serve, path: str, status: int) -> None:
    server = await serve()
    assert (await fetch(server.port, path))[0] == status


async def test_an_unexpected_error_is_a_500_logged_once(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(similar, "search_products", broken)
    server = await serve()
    caplog.set_level(logging.ERROR)
    with structlog.testing.capture_logs() as events:
        status, body, headers = await fetch(server.port, "/api/products?q=x")
    assert status == 500 and body == {"error": "internal_error"}
    assert headers["X-Content-Type-Options"] == "nosniff"
    (failed,) = [e for e in events if e["event"] == "http_request_failed"]
    assert failed["error"] == "RuntimeError" and failed["path"] == "/api/products"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # not aiohttp's too


async def test_a_database_that_cannot_be_reached_is_a_503(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(*args: Any) -> None:
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    monkeypatch.setattr(similar, "search_products", away)
    server = await serve()
    with structlog.testing.capture_logs() as events:
        status, body, _ = await fetch(server.port, "/api/products")
    assert status == 503 and body == {"error": "database_unavailable"}
    assert [e["event"] for e in events] == ["http_database_unavailable"]


# --- headers --------------------------------------------------------------------------------

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("path", "status", "html"),
    [
        ("/", 200, True),
        ("/research", 200, True),
        ("/product/1", 200, True),
        ("/healthz", 200, False),
        ("/status", 401, False),
        ("/static/app.js", 200, False),
        ("/static/nothere.js", 404, False),
        ("/similar/abc", 401, False),
        ("/nowhere", 401, False),
    ],
)
async def test_every_response_carries_the_security_headers(
    serve: Serve, path: str, status: int, html: bool
) -> None:
    server = await serve(HTTP__TOKEN="a-token-for-the-test")
    got, _, headers = await fetch(server.port, path)
    assert got == status
    assert {k: headers.get(k) for k in SECURITY} == SECURITY
    csp = headers.get("Content-Security-Policy", "")
    assert ("frame-ancestors 'none'" in csp and "default-src 'self'" in csp) is html
    if html:
        assert "img-src 'self' https:" in csp


async def test_a_refused_host_carries_them_too(serve: Serve) -> None:
    server = await serve()
    _, body, headers = await fetch(server.port, "/healthz", {"Host": "evil.example"})
    assert body["error"] == "host_not_allowed"
    assert {k: headers.get(k) for k in SECURITY} == SECURITY


# --- /healthz -------------------------------------------------------------------------------

RAW_REASONS = [
    "stage loader is failed: PermissionError: [Errno 13] Permission denied: '/data/secret/x'",
    "stage scraper is stalled: no_progress",
    "stage vectorizer is out of disk space: disk_full: [Errno 28] No space: '/data/j.jsonl'",
]
PUBLIC_REASONS = [
    "stage loader is failed: too_many_restarts",
    "stage scraper is stalled: no_progress",
    "stage vectorizer is out of disk space: disk_full",
]


@pytest.mark.parametrize(
    ("token", "sent", "shown"),
    [
        ("", None, PUBLIC_REASONS),
        ("", "Bearer ", PUBLIC_REASONS),
        ("a-token-for-the-test", None, PUBLIC_REASONS),
        ("a-token-for-the-test", "Bearer wrong", PUBLIC_REASONS),
        ("a-token-for-the-test", "Bearer a-token-for-the-test", RAW_REASONS),
    ],
)
async def test_healthz_shows_reason_codes_and_the_texts_only_with_the_token(
    serve: Serve, token: str, sent: str | None, shown: list[str]
) -> None:
    server = await serve(HTTP__TOKEN=token)
    server.sup.healthy = lambda: (False, list(RAW_REASONS))
    status, body, _ = await fetch(server.port, "/healthz", {"Authorization": sent} if sent else {})
    assert status == 503
    assert body == {"healthy": False, "reasons": shown, "stages": {}}


async def test_status_keeps_the_texts(serve: Serve) -> None:
    server = await serve()
    server.sup.healthy = lambda: (False, list(RAW_REASONS))
    status, body, _ = await fetch(server.port, "/status")
    assert status == 200 and body["unhealthy_reasons"] == RAW_REASONS


# --- page-query slots -----------------------------------------------------------------------


async def busy(server: StatusServer, count: int) -> None:
    """Wait until `count` connections are handling a request (their heads are complete)."""
    for _ in range(600):
        if server.guard.snapshot()["connections"]["busy"] == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {count} busy connections: {server.guard.snapshot()}")


async def test_a_research_request_waits_for_a_page_query_slot(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    real = research_api.research_rows

    async def counted(*args: Any) -> Any:
        ran.append("research")
        return await real(*args)

    monkeypatch.setattr(research_api, "research_rows", counted)
    server = await serve()
    slots = server.page_queries
    async with slots:
        await slots.acquire()  # every slot taken by other page queries
        request = asyncio.create_task(fetch(server.port, "/api/research"))
        await busy(server, 1)
        await asyncio.sleep(0.3)  # time to run, if it did not wait
        assert ran == [] and not request.done()
        slots.release()
        status, body, _ = await request
    assert status == 200 and body["items"] == []
    assert ran == ["research"]


async def test_a_page_query_that_waits_too_long_for_a_slot_is_told_to_come_back(
    serve: Serve,
) -> None:
    server = await serve()
    slots = server.page_queries
    slots.wait_s = 0.3
    async with slots:
        await slots.acquire()  # every slot held by queries that take their time
        status, body, headers = await fetch(server.port, "/api/research")
        assert status == 503 and body["error"] == "busy"
        assert headers["Retry-After"] == "5" and headers["X-Content-Type-Options"] == "nosniff"
        slots.release()
    assert (await fetch(server.port, "/api/research"))[0] == 200


# --- connections ----------------------------------------------------------------------------


async def _open(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
WHOLE = PARTIAL + b"\r\n"


async def test_a_half_sent_request_head_is_closed_after_the_header_timeout(
    serve: Serve,
) -> None:
    server = await serve(HTTP__HEADER_TIMEOUT_S="0.3")
    reader, writer = await _open(server.port, PARTIAL)
    with structlog.testing.capture_logs() as events:
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed, nothing answered
    writer.close()
    (timeout,) = [e for e in events if e["event"] == "http_header_timeout"]
    assert timeout["count"] == 1 and timeout["timeout_s"] == 0.3
    assert server.guard.open_connections == 0


async def _response(reader: asyncio.StreamReader) -> bytes:
    """One whole response on a kept-alive connection: head and Content-Length bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return head


async def test_a_kept_alive_connection_is_not_timed_out_between_requests(serve: Serve) -> None:
    server = await serve(HTTP__HEADER_TIMEOUT_S="0.3")
    reader, writer = await _open(server.port, WHOLE)
    assert (await _response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.6)  # idle longer than the header timeout
    writer.write(WHOLE)
    assert (await _response(reader)).startswith(b"HTTP/1.1 200")
    writer.write(PARTIAL)  # but a next head that stalls is closed
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


async def test_over_the_cap_the_oldest_half_sent_connection_makes_room(serve: Serve) -> None:
    server = await serve(HTTP__MAX_CONNECTIONS="3")
    slow = [await _open(server.port, PARTIAL) for _ in range(3)]
    with structlog.testing.capture_logs() as events:
        for _ in range(3):
            status, body, _ = await fetch(server.port, "/healthz")
            assert status == 200 and body["healthy"] is True
    assert await asyncio.wait_for(slow[0][0].read(), 30) == b""  # the oldest went first
    reached = [e for e in events if e["event"] == "http_connection_limit_reached"]
    assert reached[0]["evicted"] == 1 and reached[0]["max_connections"] == 3
    assert server.guard.open_connections <= 3
    _, status, _ = await fetch(server.port, "/status")
    assert status["http"]["limit_reached"] >= 1 and status["http"]["max_connections"] == 3
    for _, writer in slow:
        writer.close()


async def test_when_every_connection_is_busy_a_newcomer_is_refused_with_503(
    serve: Serve,
) -> None:
    server = await serve(HTTP__MAX_CONNECTIONS="2")
    slots = server.page_queries
    async with slots:
        await slots.acquire()
        waiting = [asyncio.create_task(fetch(server.port, "/api/products")) for _ in range(2)]
        await busy(server, 2)  # both requests wait for a slot
        status, body, _ = await fetch(server.port, "/healthz")
        assert status == 503 and body == {"error": "too_many_connections"}
        slots.release()
        assert [s for s, _, _ in await asyncio.gather(*waiting)] == [200, 200]
    assert (await fetch(server.port, "/healthz"))[0] == 200


MALFORMED = [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # line too long
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to a plain port
]


async def test_a_malformed_request_is_a_400_and_a_counted_warning(
    serve: Serve, error_logs: list[Any]
) -> None:
    server = await serve()
    with structlog.testing.capture_logs() as events:
        for raw in MALFORMED:
            reader, writer = await _open(server.port, raw)
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            assert answer.startswith(b"HTTP/1.0 400 Bad Request"), raw[:40]
        server.server_log.bad_requests.close()
    counted = [e for e in events if e["event"] == "http_bad_request"]
    assert 1 <= len(counted) <= 2 and counted[0]["log_level"] == "warning"
    assert counted[-1]["total"] == len(MALFORMED) - 1  # TLS bytes: aiohttp's own debug line
    assert "line_too_long" in counted[0]
