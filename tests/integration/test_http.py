"""The status server against a real pool: Host checks, odd static paths, coalesced totals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from dahell import config as config_mod
from dahell import http
from dahell.http import StatusServer
from dahell.supervisor import Supervisor
from tests.e2e.conftest import free_port

MakeConfig = Callable[..., config_mod.Config]
Serve = Callable[..., Any]


@pytest.fixture
async def serve(make_config: MakeConfig, pool: asyncpg.Pool) -> AsyncIterator[Callable[..., Any]]:
    """Start a status server (no stages) with config overrides; yields its port."""
    servers: list[StatusServer] = []

    async def start(host: str = "127.0.0.1", port: int = 0, **overrides: str) -> int:
        port = port or free_port()
        config = make_config(HTTP__LISTEN=f"{host}:{port}", **overrides)
        server = StatusServer(Supervisor(config, [], pool))
        await server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.close()


async def get(port: int, path: str, host: str | None = None) -> tuple[int, Any]:
    headers = {"Host": host} if host is not None else {}
    url = f"http://127.0.0.1:{port}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url, headers=headers) as resp,
    ):
        body = await resp.read()
        is_json = resp.content_type == "application/json"
        return resp.status, (await resp.json() if is_json else body)


# --- Host -----------------------------------------------------------------------------------


async def test_a_dns_rebinding_host_is_refused_on_a_loopback_listener(serve: Serve) -> None:
    port = await serve()
    for evil in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        for path in ("/status", "/metrics", "/api/products", "/"):
            status, body = await get(port, path, host=evil)
            assert status == 421, (evil, path)
            assert body["error"] == "host_not_allowed"
            assert evil.split(":")[0] in body["detail"]
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        status, _ = await get(port, "/healthz", host=good)
        assert status == 200, good
    status, _ = await get(port, "/status")  # the client's own Host header
    assert status == 200


async def test_configured_names_are_allowed(serve: Serve) -> None:
    port = free_port()
    await serve(port=port, HTTP__ALLOWED_HOSTS=f"dahell.lan, box.example:{port}")
    assert (await get(port, "/healthz", host=f"dahell.lan:{port}"))[0] == 200
    assert (await get(port, "/healthz", host="dahell.lan"))[0] == 200
    assert (await get(port, "/healthz", host=f"box.example:{port}"))[0] == 200
    assert (await get(port, "/healthz", host="box.example:1"))[0] == 421  # only that port
    assert (await get(port, "/healthz", host=f"other.lan:{port}"))[0] == 421
    assert (await get(port, "/healthz", host=f"localhost:{port}"))[0] == 200


async def test_a_configured_list_is_enforced_on_all_interfaces_too(serve: Serve) -> None:
    port = await serve(host="0.0.0.0", HTTP__ALLOWED_HOSTS="dahell.lan")
    assert (await get(port, "/healthz", host="dahell.lan"))[0] == 200
    assert (await get(port, "/healthz", host=f"localhost:{port}"))[0] == 200
    assert (await get(port, "/healthz", host="evil.example"))[0] == 421


async def test_any_host_is_accepted_on_all_interfaces(serve: Serve) -> None:
    port = await serve(host="0.0.0.0")
    status, _ = await get(port, "/healthz", host="dahell.example.com")
    assert status == 200


# --- static files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/%00.js",
        "/static/x%00.js",
        "/static/%2e%2e%2fhttp.py",
        "/static/..%5chttp.js",
        "/static/%0a.js",
        "/static/%ff%fe.js",
        "/static/.hidden.js",
        "/static/nothere.js",
        "/static/" + "a" * 5000 + ".js",
        "/static/app.exe",
    ],
)
async def test_an_odd_static_path_is_404(serve: Serve, path: str) -> None:
    port = await serve()
    status, _ = await get(port, path)
    assert status == 404


# --- totals ---------------------------------------------------------------------------------


async def test_concurrent_status_requests_share_one_count(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    gate = asyncio.Event()
    real = http.gather_counts

    async def counted(pool: asyncpg.Pool) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await gate.wait()  # hold the first computation so that every request misses the cache
        return await real(pool)

    monkeypatch.setattr(http, "gather_counts", counted)
    port = await serve()
    requests = [asyncio.create_task(get(port, "/status")) for _ in range(20)]
    await asyncio.sleep(0.5)
    gate.set()
    answers = await asyncio.gather(*requests)
    assert calls == 1
    assert all(status == 200 and body["totals"]["products"] == 0 for status, body in answers)
