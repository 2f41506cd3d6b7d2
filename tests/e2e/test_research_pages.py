"""The research and product pages as a dropshipper sees them: real daemon, real data, Chromium.

Two simulated weeks of the simulator's catalog (one pass a day, sales, restocks, price moves,
listings that come and go) are written as the scraper writes its journal, with the simulated
capture times. The daemon (`python -m dahell run --stages loader,vectorizer,groups`, tiny
model, HTTP token) loads them, embeds the photos and groups look-alikes; then headless Chromium
opens /research and /product/<id>. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dahell.demo import TINY_MODEL_SAME_ITEM
from dahell.journal import JournalWriter
from dahell.simulator import Simulator, SimulatorConfig
from dahell.stages.scraper import journal_lines
from tests.e2e.test_status_page import CHROMIUM_ARGS, chromium, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "research-token-2718"
PRODUCTS = 60
DAYS = 14
PESOS = re.compile(r"^-?\$ \d{1,3}(\.\d{3})*$")  # `$ 45.000`: a plain space, dots for thousands
PESOS_EN = re.compile(r"^-?\$ \d{1,3}(,\d{3})*$")  # `$ 45,000` on the English page, as `top`


def write_history(sim: Simulator, journal: Path, days: int) -> datetime:
    """`days` passes of the moving catalog, journaled as the scraper does; returns the last time."""
    writer = JournalWriter(journal, fsync=False)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days - 1)
    when = start
    try:
        for day in range(days):
            if day:
                sim.next_pass()
            when = start + timedelta(days=day)
            writer.append(journal_lines(sim.catalog, when, f"pass-{day}", 0), when)
    finally:
        writer.close()
    return when


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process, base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log

    async def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(self.base + path, headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def wait_for_groups(self, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until no photo waits for an embedding and some item has a multi-supplier group."""
        last: Any = None
        for _ in range(int(timeout / 0.5)):
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, AssertionError):
                last = await self.get("/api/research?by=suppliers&limit=500")
                grouped = [i for i in last["items"] if (i.get("group_suppliers") or 1) > 1]
                if last["pending_embeddings"] == 0 and grouped and last["total"] >= PRODUCTS // 2:
                    return dict(last)
            await asyncio.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"no groups in time; last answer: {str(last)[:600]}\nlog:\n{tail}")


@pytest.fixture
async def daemon(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    config = SimulatorConfig(products=PRODUCTS, seed=31, churn=0.02)
    async with Simulator(config) as sim:
        data = tmp_path / "data"
        write_history(sim, data / "journal", DAYS)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAHELL_")}
        env.update(
            DAHELL_DATABASE__DSN=pg_dsn,
            DAHELL_PATHS__DATA_DIR=str(data),
            DAHELL_HTTP__LISTEN=f"127.0.0.1:{port}",
            DAHELL_HTTP__TOKEN=TOKEN,
            DAHELL_LOADER__IMAGE_BASE_URL=sim.cdn_url,
            DAHELL_VECTORIZER__MODEL_DIR=str(REPO / "models" / "tiny-siglip"),
            DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS="127.0.0.1",
            DAHELL_VECTORIZER__PROVIDERS="CPUExecutionProvider",
            DAHELL_VECTORIZER__POLL_INTERVAL_S="0.5",
            DAHELL_RESEARCH__SAME_ITEM_DISTANCE=str(TINY_MODEL_SAME_ITEM),
            DAHELL_RESEARCH__POLL_INTERVAL_S="0.5",
        )
        log = tmp_path / "daemon.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dahell",
                "run",
                "--stages",
                "loader,vectorizer,groups",
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            yield Daemon(proc, f"http://127.0.0.1:{port}", log)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def test_research_and_product_pages(daemon: Daemon, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    await daemon.wait_for_groups()
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            # wait_for_function evaluates strings: the page's CSP (test_http_csp.py) refuses that
            context = await browser.new_context(
                viewport={"width": 1440, "height": 1000}, accept_downloads=True, bypass_csp=True
            )
            page = await context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            step = "research"
            try:
                await check_research_page(page, daemon, tmp_path)
                step = "product"
                await check_product_page(page, daemon)
                step = "language"
                await check_english(page, daemon)
                step = "token"
                await check_token_form(await context.new_page(), daemon)
            except Exception:
                await page.screenshot(
                    path=str(ARTIFACTS / f"{step}-page-failed.png"), full_page=True
                )
                raise
            assert errors == []
        finally:
            await browser.close()


async def rows_on_screen(page: Any) -> list[int]:
    ids = await page.locator("#rows tr[data-product-id]").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.productId))"
    )
    return [int(i) for i in ids]


async def wait_for_reload(page: Any, before: list[int]) -> None:
    """Wait until the table shows other rows than `before` and no request is in flight."""
    await page.wait_for_function(
        """before => {
             const ids = [...document.querySelectorAll('#rows tr[data-product-id]')]
               .map(r => Number(r.dataset.productId));
             return !document.body.classList.contains('busy')
               && JSON.stringify(ids) !== JSON.stringify(before);
           }""",
        arg=before,
    )


async def check_research_page(page: Any, daemon: Daemon, tmp_path: Path) -> None:
    await page.goto(f"{daemon.base}/?token={TOKEN}")  # the status page links to research
    await page.locator("#research-link").click()
    await page.wait_for_url("**/research")
    assert "token" not in page.url
    await page.wait_for_selector("#rows tr[data-product-id]")
    assert await page.locator("html").get_attribute("lang") == "es-CO"
    assert await page.locator("h2.page-title").inner_text() == "Investigación de productos"

    # Best sellers first, as the API ranks them; pesos the Colombian way.
    api = await daemon.get("/api/research?by=sales&limit=50")
    by_sales = await rows_on_screen(page)
    assert by_sales == [i["product_id"] for i in api["items"]]
    prices = await page.locator("#rows td[data-col=sale_price]").all_inner_texts()
    assert prices and all(PESOS.match(p) for p in prices), prices[:5]
    first = api["items"][0]
    cell = page.locator(
        f"#rows tr[data-product-id='{first['product_id']}'] td[data-col=sale_price]"
    )
    assert await cell.inner_text() == "$ " + f"{first['sale_price']:,.0f}".replace(",", ".")
    assert await page.locator("#rows svg.trend").count() >= len(by_sales) // 2
    assert await page.locator("#rows img.thumb").count() == len(by_sales)
    pending = await page.locator("#pending").get_attribute("data-pending")
    assert pending == str(api["pending_embeddings"])
    await page.screenshot(path=str(ARTIFACTS / "research-page.png"), full_page=False)

    # Sorting by margin changes the order, to the API's margin order.
    await page.locator("th.sortable button[data-sort=margin]").click()
    await wait_for_reload(page, by_sales)
    by_margin = await rows_on_screen(page)
    margin_api = await daemon.get("/api/research?by=margin&limit=50")
    assert by_margin == [i["product_id"] for i in margin_api["items"]]
    assert by_margin != by_sales
    assert "by=margin" in page.url
    assert await page.locator("th.sortable[data-sort=margin]").get_attribute("aria-sort") == (
        "descending"
    )

    # A city filter narrows the rows to products stocked there.
    cities = sorted({c for i in api["items"] for c in i.get("cities") or []})
    city = min(cities, key=lambda c: sum(c in (i.get("cities") or []) for i in api["items"]))
    await page.fill("#f-city", city)
    await page.locator("#filters button[type=submit]").click()
    await wait_for_reload(page, by_margin)
    narrowed = await rows_on_screen(page)
    filtered = await daemon.get(f"/api/research?by=margin&limit=50&city={city}")
    assert narrowed and narrowed == [i["product_id"] for i in filtered["items"]]
    assert all(city in i["cities"] for i in filtered["items"])
    assert filtered["total"] < margin_api["total"]
    await page.fill("#f-min-margin", "20")
    await page.locator("#filters button[type=submit]").click()
    await page.wait_for_function("!document.body.classList.contains('busy')")
    await page.wait_for_function("location.search.includes('min_margin=20')")
    for text in await page.locator("#rows td[data-col=margin] .sub").all_inner_texts():
        assert float(text.replace("%", "").replace(",", ".")) >= 20

    # The CSV holds exactly the rows on screen, pesos as plain numbers, UTF-8 with a BOM.
    await page.locator("#f-clear").click()
    await page.wait_for_function("!location.search.includes('city=')")
    await page.wait_for_function("!document.body.classList.contains('busy')")
    on_screen = await rows_on_screen(page)
    async with page.expect_download() as download_info:
        await page.locator("#csv").click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".csv")
    target = tmp_path / download.suggested_filename
    await download.save_as(target)
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    header, body = table[0], table[1:]
    assert header[:4] == ["ID", "Producto", "Proveedor", "Precio proveedor"]
    assert [int(r[0]) for r in body] == on_screen
    margins = await daemon.get("/api/research?by=margin&limit=50")
    shown = {i["product_id"]: i for i in margins["items"]}
    for row in body:
        assert int(row[3]) == shown[int(row[0])]["sale_price"]  # a number, not "$ 45.000"
        assert row[1] == shown[int(row[0])]["title"]


async def check_product_page(page: Any, daemon: Daemon) -> None:
    answer = await daemon.get("/api/research?by=suppliers&limit=500")
    details = []
    for item in answer["items"]:
        if (item.get("group_suppliers") or 1) > 1:
            details.append(await daemon.get(f"/api/products/{item['product_id']}"))

    # Among products with a group, the one whose stock moved most: the richest chart.
    def richness(d: dict[str, Any]) -> tuple[int, int, int]:
        sold = sum(
            max(0, a["stock"] - b["stock"])
            for w in d["stock"]
            for a, b in itertools.pairwise(w["series"])
        )
        return min(len(d["stock"]), 2), sold, len(d["group"]["offers"])

    detail = max(details, key=richness)
    pid = detail["product"]["product_id"]

    await page.goto(f"{daemon.base}/product/{pid}")
    await page.wait_for_selector("#product-title")
    assert await page.locator("#product-title").inner_text() == detail["product"]["title"]

    # One line per warehouse, a legend naming each warehouse's city.
    warehouses = [w for w in detail["stock"] if w["series"]]
    series = page.locator("#stock-chart svg.stock-chart g.series")
    assert await series.count() == len(warehouses)
    legend = await page.locator("#stock-chart .legend li").all_inner_texts()
    for warehouse, text in zip(warehouses, legend, strict=True):
        assert (warehouse["city"] or warehouse["name"]) in text
    assert await page.locator("#price-chart svg.price-chart g.series").count() >= 1

    # The group's offers side by side, the cheapest marked.
    group = detail["group"]
    offers = page.locator("#offers li.offer")
    assert await offers.count() == len(group["offers"])
    cheapest = page.locator("#offers li.offer.cheapest")
    assert await cheapest.count() >= 1
    assert await cheapest.first.get_attribute("data-product-id") == str(
        group["cheapest_product_id"]
    )
    price = await cheapest.first.locator(".offer-price").inner_text()
    assert PESOS.match(price) and price == "$ " + f"{group['min_price']:,.0f}".replace(",", ".")
    await page.wait_for_function("[...document.querySelectorAll('img')].every(i => i.complete)")
    await page.screenshot(path=str(ARTIFACTS / "product-page.png"), full_page=True)


async def check_english(page: Any, daemon: Daemon) -> None:
    await page.goto(f"{daemon.base}/research")
    await page.wait_for_selector("#rows tr[data-product-id]")
    await page.locator(".lang a[data-lang=en]").click()
    await page.wait_for_function("document.documentElement.lang === 'en'")
    await page.wait_for_selector("#rows tr[data-product-id]")
    assert await page.locator("h2.page-title").inner_text() == "Product research"
    await page.goto(f"{daemon.base}/research")  # remembered without ?lang
    await page.wait_for_selector("#rows tr[data-product-id]")
    assert await page.locator("h2.page-title").inner_text() == "Product research"
    prices = await page.locator("#rows td[data-col=sale_price]").all_inner_texts()
    assert prices and all(PESOS_EN.match(p) for p in prices), prices[:5]
    await page.screenshot(path=str(ARTIFACTS / "research-page-en.png"), full_page=False)
    await page.goto(f"{daemon.base}/research?lang=es")
    await page.wait_for_selector("#rows tr[data-product-id]")


async def check_token_form(page: Any, daemon: Daemon) -> None:
    """A fresh tab without the token: the page asks for it, then shows the table."""
    await page.goto(f"{daemon.base}/research")
    await page.wait_for_selector("#token-form:not([hidden])")
    assert await page.locator("#rows tr[data-product-id]").count() == 0
    await page.fill("#token-input", TOKEN)
    await page.locator("#token-form button[type=submit]").click()
    await page.wait_for_selector("#rows tr[data-product-id]")
    assert await page.locator("#token-form").is_hidden()
