"""The Dropi simulator over real HTTP: catalog shape, paging, tokens, faults, CORS, images."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from dahell.browser import chromium_args, find_chromium
from dahell.simulator import Simulator, SimulatorConfig

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
EMAIL, PASSWORD = "demo@dahell.test", "s3cret-Pass"
# Copies of the real samples in shared/dropi, committed so the test runs in any clone.
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "dropi"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(products=130, seed=3)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def browser_headers(sim: Simulator, token: str = "") -> dict[str, str]:
    headers = {"User-Agent": BROWSER_UA, "Origin": sim.app_url}
    if token:
        headers["X-Authorization"] = f"Bearer {token}"
    return headers


async def login(
    http: aiohttp.ClientSession, sim: Simulator, email: str = EMAIL, password: str = PASSWORD
) -> tuple[int, dict[str, Any]]:
    body = {"email": email, "password": password, "white_brand_id": 1}
    async with http.post(
        sim.api_url + "/api/login", json=body, headers=browser_headers(sim)
    ) as response:
        return response.status, await response.json()


async def fetch_page(
    http: aiohttp.ClientSession, sim: Simulator, token: str, start: int, size: int
) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {"startData": start, "pageSize": size, "no_count": True, "country": "COLOMBIA"}
    async with http.post(
        sim.api_url + "/api/products/v4/index", json=body, headers=browser_headers(sim, token)
    ) as response:
        return response.status, dict(response.headers), await response.json()


async def token_for(http: aiohttp.ClientSession, sim: Simulator) -> str:
    status, body = await login(http, sim)
    assert status == 200 and body["isSuccess"]
    return str(body["token"])


async def test_catalog_is_deterministic_and_moves_between_passes() -> None:
    async with Simulator(SimulatorConfig(products=300, seed=11)) as a:
        async with Simulator(SimulatorConfig(products=300, seed=11)) as b:
            assert a.catalog == b.catalog
            a.next_pass()
            b.next_pass()
            assert a.catalog == b.catalog
        first = [p["id"] for p in a.catalog]
    async with Simulator(SimulatorConfig(products=300, seed=12)) as c:
        assert [p["id"] for p in c.catalog] != first
    assert len(set(first)) == 300


async def test_next_pass_moves_some_stock_and_keeps_ids() -> None:
    async with Simulator(SimulatorConfig(products=400, seed=5)) as sim:
        before = json.loads(json.dumps(sim.catalog))
        sim.next_pass()
        after = sim.catalog
    assert [p["id"] for p in before] == [p["id"] for p in after]
    changed = sum(1 for x, y in zip(before, after, strict=True) if x != y)
    assert 10 <= changed <= 100


async def test_products_have_the_real_samples_keys(sim: Simulator) -> None:
    sample = json.loads((SAMPLES / "sample-api-response.json").read_text(encoding="utf-8"))
    real = {p["type"]: set(p) for p in sample["objects"]}
    kinds = {"SIMPLE": 0, "VARIABLE": 0}
    for product in sim.catalog:
        keys = set(product) | ({"suggested_price"} if product["type"] == "SIMPLE" else set())
        assert keys == real[product["type"]], product["id"]
        kinds[product["type"]] += 1
    assert kinds["VARIABLE"] > 10 and kinds["SIMPLE"] > 60
    variable = next(p for p in sim.catalog if p["type"] == "VARIABLE")
    stock_row = variable["variations"][0]["warehouse_product_variation"][0]
    assert set(stock_row) == {"id", "stock", "warehouse", "warehouse_id"}
    assert set(stock_row["warehouse"]["city"]) >= {"id", "name"}


async def test_pages_cover_the_catalog_once_and_the_last_is_short(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    token = await token_for(http, sim)
    ids: list[int] = []
    start, sizes = 0, []
    while True:
        status, _, body = await fetch_page(http, sim, token, start, 40)
        assert status == 200 and body["isSuccess"]
        ids += [p["id"] for p in body["objects"]]
        sizes.append(len(body["objects"]))
        if len(body["objects"]) < 40:
            break
        start += 40
    assert ids == [p["id"] for p in sim.catalog]
    assert sizes == [40, 40, 40, 10]


async def test_expired_token_answers_401_token_is_expired(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # `exp` is whole seconds (int(now + lifetime)): 2 s leaves at least 1 s for the first page.
    sim.faults.token_lifetime_s = 2
    token = await token_for(http, sim)
    status, _, _ = await fetch_page(http, sim, token, 0, 10)
    assert status == 200
    for _ in range(300):  # expires within 2 s; polled, so a slow machine only waits longer
        await asyncio.sleep(0.1)
        status, _, body = await fetch_page(http, sim, token, 0, 10)
        if status != 200:
            break
    assert status == 401
    assert body == {"isSuccess": False, "message": "Token is Expired", "status": 401}


async def test_clock_skew_expires_tokens_early(sim: Simulator, http: aiohttp.ClientSession) -> None:
    token = await token_for(http, sim)
    sim.faults.clock_skew_s = 5 * 3600
    status, _, body = await fetch_page(http, sim, token, 0, 10)
    assert (status, body["message"]) == (401, "Token is Expired")


async def test_forged_token_is_unauthorized(sim: Simulator, http: aiohttp.ClientSession) -> None:
    token = await token_for(http, sim)
    status, _, body = await fetch_page(http, sim, token[:-3] + "AAA", 0, 10)
    assert status == 401 and body["isSuccess"] is False


async def test_rate_limit_answers_429_with_retry_after(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.faults.rate_limit_every, sim.faults.retry_after_s = 2, 3
    token = await token_for(http, sim)
    statuses = []
    for _ in range(4):
        status, headers, _ = await fetch_page(http, sim, token, 0, 10)
        statuses.append((status, headers.get("Retry-After")))
    assert statuses == [(200, None), (429, "3"), (200, None), (429, "3")]
    assert sim.stats.rejected_429 == 2


async def test_is_success_false_on_http_200(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.faults.is_success_false_every = 3
    token = await token_for(http, sim)
    results = [(await fetch_page(http, sim, token, 0, 5))[::2] for _ in range(3)]
    assert [status for status, _ in results] == [200, 200, 200]
    assert [body["isSuccess"] for _, body in results] == [True, True, False]
    assert "Token" not in results[2][1]["message"]


async def test_firewall_refuses_requests_without_browser_headers(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    token = await token_for(http, sim)
    body = {"startData": 0, "pageSize": 10}
    plain = {"X-Authorization": f"Bearer {token}", "User-Agent": "python-requests/2.32"}
    async with http.post(sim.api_url + "/api/products/v4/index", json=body, headers=plain) as r:
        assert r.status == 403
    async with http.post(sim.api_url + "/api/login", json={"email": EMAIL}) as r:
        assert r.status == 403
    sim.faults.require_browser_headers = False
    async with http.post(sim.api_url + "/api/products/v4/index", json=body, headers=plain) as r:
        assert r.status == 200
    assert sim.stats.rejected_403 == 2


async def test_cors_preflight_allows_the_app_origin(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Origin": sim.app_url,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-authorization",
    }
    async with http.options(sim.api_url + "/api/products/v4/index", headers=headers) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == sim.app_url
        allowed = r.headers["Access-Control-Allow-Headers"].lower()
        assert "x-authorization" in allowed and "content-type" in allowed


async def test_wrong_password_and_forced_login_failure(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await login(http, sim, password="nope")
    assert (status, body) == (401, {"isSuccess": False, "message": "Credenciales inválidas"})
    sim.faults.fail_login = True
    status, _ = await login(http, sim)
    assert status == 401


async def test_two_factor_account_gets_a_token_the_catalog_refuses(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await login(http, sim, email="2fa@dahell.test")
    assert status == 200 and body["isSuccess"] and body["requires_2fa"] and body["twoFactor"]
    status, _, refused = await fetch_page(http, sim, body["token"], 0, 10)
    assert status == 401 and refused["isSuccess"] is False


async def test_cdn_serves_every_image_kind_and_some_broken_ones(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(products=400, seed=9)) as sim:
        seen: dict[str, set[tuple[str, str]]] = {}
        for path, spec in sim.images.items():
            async with http.get(sim.cdn_url + path) as r:
                body = await r.read()
                outcome = _decode(r.status, body)
            seen.setdefault(spec.broken or spec.kind, set()).add(outcome)
    assert seen["jpeg"] == {("JPEG", "RGB")}
    assert seen["png_alpha"] == {("PNG", "RGBA")}
    assert seen["webp"] == {("WEBP", "RGB")}
    assert seen["grey"] == {("JPEG", "L")}
    assert seen["palette"] == {("PNG", "P")}
    broken = seen.get("missing", set()) | seen.get("truncated", set()) | seen.get("html", set())
    assert broken and all(kind in ("404", "undecodable") for kind, _ in broken)


def _decode(status: int, body: bytes) -> tuple[str, str]:
    if status == 404:
        return "404", ""
    try:
        image = Image.open(io.BytesIO(body))
        image.load()
    except OSError:
        return "undecodable", ""
    return str(image.format), image.mode


async def test_lookalikes_reuse_another_suppliers_photo() -> None:
    async with Simulator(SimulatorConfig(products=400, seed=9)) as sim:
        by_id = {p["id"]: p for p in sim.catalog}
        specs = sim.images
        assert 20 <= len(sim.lookalikes) <= 70
        for copy_id, source_id in sim.lookalikes.items():
            copy_spec = specs[by_id[copy_id]["gallery"][0]["urlS3"]]
            source_spec = specs[by_id[source_id]["gallery"][0]["urlS3"]]
            assert copy_spec.photo_seed == source_spec.photo_seed
            assert by_id[copy_id]["user"]["id"] != by_id[source_id]["user"]["id"]


@pytest.mark.slow
async def test_real_chromium_logs_in_through_the_form_and_sees_products() -> None:
    from playwright.async_api import async_playwright

    config = SimulatorConfig(products=120, seed=4, ui_page_size=50)
    async with Simulator(config) as sim, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=find_chromium(), args=chromium_args(), headless=True
        )
        try:
            page = await browser.new_page()
            await page.goto(sim.app_url + "/login")
            await page.fill("input[name=email]", EMAIL)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/dashboard/search")
            await page.wait_for_selector(".product-card")
            assert await page.locator(".product-card").count() == 50
            await page.get_by_text("Mostrar más productos").click()
            await page.wait_for_function("document.querySelectorAll('.product-card').length > 50")
            token = await page.evaluate("localStorage.getItem('DROPI_token')")
        finally:
            await browser.close()
    assert token and token.count(".") == 2
    assert sim.stats.logins == 1 and sim.stats.served[:2] == [(0, 50), (50, 50)]


# --- a catalog that moves like a real one (issue 13) -----------------------------------------


def _total_stock(product: dict[str, Any]) -> int:
    rows = list(product.get("warehouse_product") or [])
    for variation in product.get("variations") or []:
        rows += variation["warehouse_product_variation"]
    return sum(int(r["stock"]) for r in rows)


def _history(sim: Simulator, passes: int) -> list[dict[int, dict[str, Any]]]:
    seen = [{p["id"]: p for p in sim.catalog}]
    for _ in range(passes):
        sim.next_pass()
        seen.append({p["id"]: p for p in sim.catalog})
    return seen


async def test_lookalikes_are_the_same_kind_of_item_under_another_name() -> None:
    async with Simulator(SimulatorConfig(products=400, seed=9)) as sim:
        by_id = {p["id"]: p for p in sim.catalog}
        specs = sim.images
        identical = 0
        for copy_id, source_id in sim.lookalikes.items():
            copy, source = by_id[copy_id], by_id[source_id]
            noun, qualifier = sim.item_kind(copy_id)
            assert sim.item_kind(source_id) == (noun, qualifier)
            for title in (copy["name"], source["name"]):
                words = " ".join(title.split()).casefold()
                assert noun.casefold() in words and qualifier.casefold() in words, title
            assert copy["categories"] == source["categories"]
            assert 0.8 <= copy["sale_price"] / source["sale_price"] <= 1.2
            a = specs[copy["gallery"][0]["urlS3"]]
            b = specs[source["gallery"][0]["urlS3"]]
            identical += (a.kind, a.variant) == (b.kind, b.variant)
    assert identical >= 3  # some suppliers upload the very same file


async def test_products_sell_at_their_own_rates_and_some_restock() -> None:
    async with Simulator(SimulatorConfig(products=300, seed=13)) as sim:
        history = _history(sim, 14)
    sold: dict[int, int] = {}
    restocks = 0
    for before, after in itertools.pairwise(history):
        for pid, product in after.items():
            change = _total_stock(product) - _total_stock(before[pid])
            sold[pid] = sold.get(pid, 0) + max(0, -change)
            restocks += change > 0
    per_product = sorted(sold.values())
    assert per_product[len(per_product) // 2] <= 2  # most products barely sell
    assert per_product[-1] >= 60  # a few sell dozens in two weeks
    assert sum(1 for n in per_product if n > 0) >= 60
    assert restocks >= 5
    moved = {
        pid
        for before, after in itertools.pairwise(history)
        for pid in after
        if after[pid]["sale_price"] != before[pid]["sale_price"]
    }
    assert 2 <= len(moved) <= 60  # prices move now and then


async def test_the_same_seed_moves_the_same_way() -> None:
    config = SimulatorConfig(products=150, seed=17, churn=0.02)
    async with Simulator(config) as a, Simulator(config) as b:
        assert _history(a, 6) == _history(b, 6)


async def test_with_churn_listings_vanish_and_new_ones_appear_with_their_photos(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(products=200, seed=19, churn=0.02)) as sim:
        first = {p["id"] for p in sim.catalog}
        assert len(first) == 200
        _history(sim, 5)
        now = {p["id"] for p in sim.catalog}
        appeared = [p for p in sim.catalog if p["id"] not in first]
        assert len(first - now) >= 5 and len(appeared) >= 5
        assert sim.catalog[0]["id"] not in first  # new listings come first
        async with http.get(sim.image_url(appeared[0])) as r:
            assert r.status in (200, 404)  # served, or one of the broken photos on purpose
            assert appeared[0]["gallery"][0]["urlS3"] in sim.images
    async with Simulator(SimulatorConfig(products=200, seed=19)) as still:
        _history(still, 5)
        assert {p["id"] for p in still.catalog} == first  # churn is off by default


async def test_a_new_scrape_pass_advances_the_catalog_and_the_simulated_clock(
    http: aiohttp.ClientSession,
) -> None:
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    config = SimulatorConfig(
        products=90, seed=23, start_at=start, advance_each_pass=True, max_passes=2
    )
    async with Simulator(config) as sim:
        token = await token_for(http, sim)
        assert start <= sim.clock() < start + timedelta(minutes=5)
        for expected_pass in (0, 1, 2, 2):
            pages = []
            for offset in (0, 40, 80):
                _, _, body = await fetch_page(http, sim, token, offset, 40)
                pages.append(body["objects"])
                assert sim.pass_no == expected_pass
            assert [len(p) for p in pages] == [40, 40, 10]
        day = sim.clock() - start
        assert timedelta(days=2) <= day < timedelta(days=2, minutes=5)
        # Re-reading a page in the middle of a pass does not start a new one.
        await fetch_page(http, sim, token, 40, 40)
        assert sim.pass_no == 2
