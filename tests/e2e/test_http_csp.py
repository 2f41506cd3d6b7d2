"""The pages under their real Content-Security-Policy, in Chromium (issue 17).

The page tests of `test_status_page.py` and `test_research_pages.py` poll with Playwright's
`wait_for_function`, which evaluates strings in the page: a policy without 'unsafe-eval' refuses
that, so they run with Playwright's CSP bypass. Here the status, research and product pages run
under the policy as served, with photos from another origin (the configured image base, as the
Dropi CDN is in production), and no directive may be violated.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dahell import config as config_mod
from dahell.http import StatusServer
from dahell.supervisor import Supervisor
from tests.e2e.conftest import free_port
from tests.e2e.test_status_page import CHROMIUM_ARGS, chromium
from tests.integration import research_history as h

MakeConfig = Callable[..., config_mod.Config]
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def photos() -> AsyncIterator[str]:
    """A photo server on its own origin: every path is a 1x1 PNG. Yields its base URL."""

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=PIXEL, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{path:.*}", photo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


@pytest.fixture
async def base(
    make_config: MakeConfig, pool: asyncpg.Pool, photos: str, tmp_path: Path
) -> AsyncIterator[str]:
    """A status server over the research history; yields its base URL."""
    port = free_port()
    config = make_config(HTTP__LISTEN=f"127.0.0.1:{port}", LOADER__IMAGE_BASE_URL=photos)
    await h.load_history(pool, config, tmp_path)
    server = StatusServer(Supervisor(config, [], pool))
    await server.start()
    yield f"http://127.0.0.1:{port}"
    await server.close()


async def test_the_pages_work_under_their_content_security_policy(base: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"error: {exc}"))
            page.on("console", lambda m: _note_violation(m, problems))
            response = await page.goto(base + "/")
            assert response is not None
            assert (
                "frame-ancestors 'none'"
                in (await response.all_headers())["content-security-policy"]
            )
            await page.wait_for_selector("article.stage, #health-pill:not(:empty)")

            await page.goto(base + "/research")
            await page.wait_for_selector("#rows tr[data-product-id] img")
            assert await _photos_loaded(page) > 0

            await page.goto(base + "/product/102")
            await page.wait_for_selector(".swatch")  # coloured through a style attribute
            assert await _photos_loaded(page) > 0
            assert problems == []
        finally:
            await browser.close()


def _note_violation(message: Any, problems: list[str]) -> None:
    if "Content Security Policy" in message.text:
        problems.append(f"csp: {message.text}")


async def _photos_loaded(page: Any) -> int:
    """How many product photos on the page have loaded (blocked ones have no pixels)."""
    await page.wait_for_load_state("load")
    return int(
        await page.evaluate(
            "() => [...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
        )
    )
