"""The status page as a person sees it: the real daemon, the real database, headless Chromium.

The daemon runs as a subprocess (loader and vectorizer, tiny model) over a journal of simulator
products whose photos come from the simulator's CDN. The page is opened with `?token=` (the
daemon has an HTTP token) and checked for stage states, counts, the throughput chart, the search
box and a product's look-alikes. A screenshot lands in test-artifacts/status-page.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from dahell.simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "page-token-4711"
PRODUCTS = 24
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    try:
        from dahell.browser import find_chromium

        return find_chromium()
    except Exception:
        found = shutil.which("chromium")
        if not found:
            pytest.fail("no Chromium installed: ./quickstart.sh installs it", pytrace=False)
        return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_journal(journal: Path, products: list[dict[str, Any]]) -> None:
    journal.mkdir(parents=True)
    lines = [orjson.dumps(p) for p in products]
    (journal / "raw_products_20261101.jsonl").write_bytes(b"\n".join(lines) + b"\n")


async def embedded_product(dsn: str) -> tuple[int, str]:
    """A product that has an embedding, to search for by its title."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT p.product_id, p.title FROM products p
               JOIN product_embeddings e USING (product_id)
               ORDER BY p.product_id LIMIT 1"""
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["product_id"]), str(row["title"])


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process, base: str, log: Path, dsn: str) -> None:
        self.proc, self.base, self.log, self.dsn = proc, base, log, dsn

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(self.base + "/status", headers=headers) as resp:
                if resp.status == 200:
                    body: dict[str, Any] = await resp.json()
                    return body
        return None

    async def wait_until_embedded(self, n: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until `n` products have embeddings (the vectorizer caught up with the loader)."""
        last: dict[str, Any] | None = None
        timeout_cfg = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout_cfg) as session:
            for _ in range(int(timeout / 0.5)):
                if self.proc.returncode is not None:
                    break
                last = await self.status(session) or last
                done = ((last or {}).get("totals") or {}).get("embeddings", {}).get("done", 0)
                if done >= n:
                    return last or {}
                await asyncio.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"not {n} embeddings in time; last /status: {last}\nlog:\n{tail}")


@pytest.fixture
async def daemon(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with Simulator(SimulatorConfig(products=PRODUCTS, seed=11)) as sim:
        data = tmp_path / "data"
        write_journal(data / "journal", sim.catalog)
        port = free_port()
        env = {
            **os.environ,
            "DAHELL_DATABASE__DSN": pg_dsn,
            "DAHELL_PATHS__DATA_DIR": str(data),
            "DAHELL_HTTP__LISTEN": f"127.0.0.1:{port}",
            "DAHELL_HTTP__TOKEN": TOKEN,
            "DAHELL_LOADER__IMAGE_BASE_URL": sim.cdn_url,
            "DAHELL_VECTORIZER__MODEL_DIR": str(REPO / "models" / "tiny-siglip"),
            "DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS": "127.0.0.1",
            "DAHELL_VECTORIZER__PROVIDERS": "CPUExecutionProvider",
            "DAHELL_VECTORIZER__POLL_INTERVAL_S": "0.5",
        }
        env.pop("DAHELL_CONFIG", None)
        log = tmp_path / "daemon.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dahell",
                "run",
                "--stages",
                "loader,vectorizer",
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            yield Daemon(proc, f"http://127.0.0.1:{port}", log, pg_dsn)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def test_status_page_shows_stages_counts_and_lookalikes(daemon: Daemon) -> None:
    from playwright.async_api import async_playwright

    # Most products embed; a few simulator photos are broken on purpose.
    await daemon.wait_until_embedded(PRODUCTS // 2)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            # wait_for_function evaluates strings: the page's CSP (test_http_csp.py) refuses that
            page = await browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            try:
                await check_page(page, daemon)
            except Exception:
                await page.screenshot(
                    path=str(ARTIFACTS / "status-page-failed.png"), full_page=True
                )
                raise
            await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()


async def check_page(page: Any, daemon: Daemon) -> None:
    await page.goto(f"{daemon.base}/?token={TOKEN}")

    # The token moved from the address bar to sessionStorage.
    assert "token" not in page.url
    await page.wait_for_selector("article.stage[data-stage=loader]")
    await page.wait_for_function("document.querySelector('#health-pill').textContent")

    # Each stage: its name, a state a person can read, counts by outcome, a chart.
    for name in ("loader", "vectorizer"):
        card = page.locator(f"article.stage[data-stage={name}]")
        assert (await card.locator("h3").inner_text()).lower() == name
        state = await card.locator(".badge").inner_text()
        assert state.lower() in {"running", "idle", "starting"}
        assert "since " in await card.locator(".since").inner_text()
        chart = card.locator("svg.spark")
        assert await chart.count() == 1
        assert "Throughput of " + name in (await chart.get_attribute("aria-label") or "")
    inserted = page.locator("article[data-stage=loader] [data-outcome=inserted] dd")
    assert await inserted.inner_text() == str(PRODUCTS)
    embedded = page.locator("article[data-stage=vectorizer] [data-outcome=embedded] dd")
    assert int(await embedded.inner_text()) >= PRODUCTS // 2
    assert await page.locator("#total-products").inner_text() == str(PRODUCTS)

    # The look-alike browser: a labelled search box, products to pick, neighbours.
    search = page.get_by_label("Search products by title, SKU or id")
    assert await search.is_visible()
    product_id, title = await embedded_product(daemon.dsn)
    await search.fill(title)
    button = page.locator(f"#products [data-product-id='{product_id}'] .card-button")
    await button.click()
    await page.wait_for_selector("#neighbours .card")
    neighbours = page.locator("#neighbours .card")
    assert await neighbours.count() >= 1
    first = await neighbours.first.inner_text()
    assert "distance" in first and "$" in first  # COP prices
    assert await page.locator("#picked img").get_attribute("alt")
    await page.wait_for_function(
        "[...document.querySelectorAll('#neighbours img')].every(i => i.complete)"
    )

    # A search that matches nothing says so.
    await search.fill("zzzz-no-such-product")
    await page.wait_for_function(
        "document.querySelector('#products-note').textContent.includes('No product')"
    )
    await search.fill(str(product_id))
    await page.wait_for_selector(f"#products [data-product-id='{product_id}']")

    await page.locator("#similar").scroll_into_view_if_needed()


async def test_the_page_without_a_token_asks_for_one(daemon: Daemon) -> None:
    from playwright.async_api import async_playwright

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for _ in range(240):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(daemon.base + "/healthz") as resp:
                    if resp.status in (200, 503):
                        break
            await asyncio.sleep(0.25)
    assert time.monotonic() - started < 60
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(daemon.base + "/")
            await page.wait_for_selector("#token-form:not([hidden])")
            await page.fill("#token-input", TOKEN)
            await page.click("#token-form button")
            await page.wait_for_selector("article.stage[data-stage=loader]")
        finally:
            await browser.close()
