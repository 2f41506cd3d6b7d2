"""Research answers on a hand-made history (tests/integration/research_history.py): exact numbers.

The history goes in through the real loader, so these tests also prove that the loader's stock
history feeds the sales estimate; embeddings are written by hand with chosen vectors.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dahell.config import Config
from dahell.research import groups
from dahell.research.queries import ResearchFilters, product_detail, research_rows
from dahell.research.sales import newest_capture, refresh_summary, sales_for, summary_is_current
from tests.factories import legacy_line
from tests.integration import research_history as h


@pytest.fixture
def config(make_config: Any, pg_dsn: str) -> Config:
    return make_config(pg_dsn)  # type: ignore[no-any-return]


@pytest.fixture
async def history(pool: asyncpg.Pool, config: Config, tmp_path: Path) -> asyncpg.Pool:
    await h.load_history(pool, config, tmp_path)
    return pool


async def upkeep_until_idle(pool: asyncpg.Pool, batch: int = 500) -> groups.UpkeepResult:
    total = groups.UpkeepResult()
    for _ in range(50):
        r = await groups.upkeep_round(pool, h.DISTANCE, batch=batch)
        if not r.work:
            return total
        for name in ("placed", "moved", "removed", "merged_groups", "split_groups"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    raise AssertionError("upkeep never became idle")


async def assignment(pool: asyncpg.Pool) -> dict[int, int]:
    rows = await pool.fetch("SELECT product_id, group_id FROM research_groups")
    return {r["product_id"]: r["group_id"] for r in rows}


EXPECTED_SALES = {
    # product: (units_7d, units_30d, days_7d, days_30d, per_day_7d, per_day_30d)
    101: (35, 45, 7.0, 9.0, 5.0, 5.0),
    102: (12, 16, 7.0, 9.0, 1.71, 1.78),
    103: (10, 10, 2.0, 2.0, 5.0, 5.0),
    104: (6, 10, 3.0, 5.0, 2.0, 2.0),
    105: (8, 10, 7.0, 9.0, 1.14, 1.11),
    201: (0, 0, 7.0, 9.0, 0.0, 0.0),
    202: (14, 18, 7.0, 9.0, 2.0, 2.0),
}


async def test_windows_end_at_the_newest_capture(history: asyncpg.Pool) -> None:
    assert await newest_capture(history) == h.AT


@pytest.mark.parametrize("files", [1, 4])
async def test_sales_match_the_hand_made_history(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, files: int
) -> None:
    await h.load_history(pool, config, tmp_path, files=files)
    sales = await sales_for(pool, h.AT, None)
    for pid, (u7, u30, d7, d30, r7, r30) in EXPECTED_SALES.items():
        s = sales[pid]
        got = (s.units_7d, s.units_30d, s.days_7d, s.days_30d, s.per_day_7d, s.per_day_30d)
        assert got == (u7, u30, d7, d30, r7, r30), pid


async def test_a_vanished_product_is_not_a_sale_of_its_stock(history: asyncpg.Pool) -> None:
    sales = (await sales_for(history, h.AT, [104]))[104]
    assert sales.units_30d == 10  # 40 -> 30 while seen; its last 30 units did not sell
    assert sales.last_seen == h.CAPTURES[5]


async def test_variable_products_sum_their_variations(history: asyncpg.Pool) -> None:
    # The per-warehouse sum (30, 29, 33, 31, ...) would show 9: B's restock hides A's sale.
    assert (await sales_for(history, h.AT, [105]))[105].units_30d == 10


async def test_at_moves_the_windows(history: asyncpg.Pool) -> None:
    at = h.CAPTURES[4]  # windows end at T4: 102's restock is the last capture
    s = await sales_for(history, at, [101, 102, 103])
    assert (s[101].units_30d, s[101].days_30d, s[101].per_day_30d) == (20, 4.0, 5.0)
    assert s[102].units_30d == 6
    assert s[103].units_30d == 0 and s[103].days_30d == 0.0 and s[103].per_day_30d is None


async def test_ranking_by_sales_shrinks_short_histories(history: asyncpg.Pool) -> None:
    page = await research_rows(history, ResearchFilters(by="sales", limit=7))
    assert page.at == h.AT
    order = [i["product_id"] for i in page.items]
    # 103 sold 5 a day for 2 days, like 101 over 9: it ranks at 10/7 a day, below 102 (16/9)
    assert order == [101, 202, 102, 103, 104, 105, 203]
    assert page.total == 15


async def test_margin_is_null_without_a_suggested_price(history: asyncpg.Pool) -> None:
    page = await research_rows(history, ResearchFilters(by="margin", limit=500))
    items = {i["product_id"]: i for i in page.items}
    assert (items[202]["margin"], items[202]["margin_pct"]) == (35_000, 77.8)
    assert (items[201]["margin"], items[201]["margin_pct"]) == (30_000, 60.0)
    assert (items[101]["margin"], items[101]["margin_pct"]) == (30_000, 60.0)
    assert items[105]["suggested_price"] is None
    assert items[105]["margin"] is None and items[105]["margin_pct"] is None
    assert page.items[0]["product_id"] == 202
    assert page.items[-1]["product_id"] == 105  # no suggested price: last, never 0
    filtered = await research_rows(history, ResearchFilters(by="margin", min_margin=61))
    assert [i["product_id"] for i in filtered.items] == [202]


async def test_groups_three_suppliers_one_cheaper(history: asyncpg.Pool) -> None:
    await h.write_embeddings(history, h.FIRST_EMBEDDINGS, h.AT)
    await h.write_identical_photos(history)
    await upkeep_until_idle(history)
    got = await assignment(history)
    assert got == {
        201: 201, 202: 201, 203: 201, 204: 201,
        301: 301,
        401: 401, 402: 401, 403: 401,
        501: 501, 502: 501,
    }  # fmt: skip
    page = await research_rows(history, ResearchFilters(by="suppliers", limit=4))
    first = page.items[0]
    assert [i["product_id"] for i in page.items] == [202, 201, 204, 203]  # cheapest first
    assert first["group_id"] == 201 and first["group_suppliers"] == 4
    assert (first["group_min_price"], first["group_max_price"]) == (45_000, 52_000)
    assert first["group_units_per_day_30d"] == 3.0  # 0 + 2 + 1 + 0
    detail = await product_detail(history, 201)
    assert detail is not None
    group = detail["group"]
    assert group["cheapest_product_id"] == 202 and group["suppliers"] == 4
    offers = {o["product_id"]: o for o in group["offers"]}
    assert offers[202]["distance"] == pytest.approx(0.004963, abs=1e-5)
    assert 201 not in offers or offers[201]["distance"] is None


async def test_an_embedding_that_changes_moves_group(history: asyncpg.Pool) -> None:
    await h.write_embeddings(history, h.FIRST_EMBEDDINGS, h.AT)
    await upkeep_until_idle(history)
    await h.write_embeddings(history, h.CHANGED_EMBEDDINGS, h.AT + timedelta(hours=1))
    result = await upkeep_until_idle(history)
    got = await assignment(history)
    assert {p: got[p] for p in (201, 202, 203, 204, 301)} == {
        201: 201, 202: 201, 203: 201, 204: 204, 301: 204,
    }  # fmt: skip
    assert {p: got[p] for p in (401, 402, 403)} == {401: 401, 402: 402, 403: 403}
    assert result.moved == 2 and result.split_groups == 1
    incremental = got
    await groups.recompute_all(history, h.DISTANCE)
    assert await assignment(history) == incremental


async def test_upkeep_batches_give_the_full_recomputation(history: asyncpg.Pool) -> None:
    await h.write_embeddings(history, h.FIRST_EMBEDDINGS, h.AT)
    await h.write_identical_photos(history)
    await upkeep_until_idle(history, batch=1)
    one_by_one = await assignment(history)
    await groups.recompute_all(history, h.DISTANCE)
    assert await assignment(history) == one_by_one


async def test_a_removed_embedding_leaves_its_group(history: asyncpg.Pool) -> None:
    await h.write_embeddings(history, h.FIRST_EMBEDDINGS, h.AT)
    await upkeep_until_idle(history)
    await history.execute("DELETE FROM product_embeddings WHERE product_id = 402")
    result = await upkeep_until_idle(history)
    got = await assignment(history)
    assert 402 not in got and (got[401], got[403]) == (401, 403)
    assert result.removed == 1
    page = await research_rows(history, ResearchFilters(by="sales", limit=500))
    item = next(i for i in page.items if i["product_id"] == 402)
    assert item["group_id"] is None and item["group_suppliers"] == 1


async def test_items_carry_the_whole_contract(history: asyncpg.Pool) -> None:
    page = await research_rows(history, ResearchFilters(by="new", limit=3))
    assert page.items[0]["product_id"] == 103  # first seen at T7
    item = page.items[0]
    for key in (
        "product_id", "title", "supplier_id", "supplier_name", "image_url", "categories",
        "cities", "sale_price", "suggested_price", "margin", "margin_pct", "stock", "units_7d",
        "units_30d", "units_per_day_7d", "units_per_day_30d", "days_observed", "first_seen_at",
        "group_id", "group_suppliers", "group_min_price", "group_max_price",
        "group_units_per_day_30d", "stock_trend",
    ):  # fmt: skip
        assert key in item, key
    assert item["cities"] == ["Cali"] and item["stock"] == 20
    assert item["stock_trend"] == [30, 25, 20]
    steady = (await research_rows(history, ResearchFilters(limit=1))).items[0]
    assert steady["stock_trend"] == [100 - 5 * d for d in range(10)]
    assert page.pending_embeddings == 15


async def test_filters_by_category_and_city(history: asyncpg.Pool) -> None:
    medellin = await research_rows(history, ResearchFilters(city="MEDELLÍN", limit=50))
    assert [i["product_id"] for i in medellin.items] == [105]
    assert (await research_rows(history, ResearchFilters(category="nada"))).total == 0
    hogar = await research_rows(history, ResearchFilters(category="hogar", limit=500))
    assert hogar.total == 15


async def test_product_detail_has_stock_per_warehouse_and_prices(history: asyncpg.Pool) -> None:
    detail = await product_detail(history, 102)
    assert detail is not None
    [warehouse] = detail["stock"]
    assert warehouse["city"] == "Cali"
    assert [p["stock"] for p in warehouse["series"]] == [50, 48, 46, 44, 100, 98, 96, 94, 92, 90]
    assert detail["prices"] == [
        {"at": h.T0.isoformat(), "sale_price": 50_000, "suggested_price": 80_000}
    ]
    assert detail["group"] is None
    assert await product_detail(history, 999_999) is None


async def test_an_empty_database_answers_empty(pool: asyncpg.Pool) -> None:
    page = await research_rows(pool, ResearchFilters())
    assert (page.total, page.items, page.at) == (0, [], None)


@pytest.mark.parametrize("by", ["sales", "new"])
async def test_the_sales_summary_ranks_like_the_live_query(
    history: asyncpg.Pool, config: Config, tmp_path: Path, by: str
) -> None:
    live = await research_rows(history, ResearchFilters(by=by, limit=500))
    assert await summary_is_current(history) is None
    assert await refresh_summary(history) == 15
    assert await summary_is_current(history) == h.AT
    assert await refresh_summary(history) is None  # nothing moved on
    summarised = await research_rows(history, ResearchFilters(by=by, limit=500))
    assert summarised.items == live.items
    # A new capture: 103 sells 15 more. The summary is stale, so the ranking is live again.
    line = legacy_line(h._simple(103, 5), (h.AT + timedelta(minutes=2)).isoformat()[:19])
    (tmp_path / "late.jsonl").write_text(line + "\n", encoding="utf-8")
    await h.load_file(history, config, tmp_path / "late.jsonl")
    assert await summary_is_current(history) is None
    recent = await research_rows(history, ResearchFilters(by=by, limit=500))
    # Refreshed a moment ago: still used, the answer as of its capture (stock is current).
    assert recent.at == h.AT
    assert [(i["product_id"], i["units_30d"]) for i in recent.items] == [
        (i["product_id"], i["units_30d"]) for i in live.items
    ]
    # Refreshed too long ago: the ranking is computed live, up to the newest capture.
    await history.execute(
        "UPDATE research_upkeep SET updated_at = now() - interval '1 hour' WHERE name = 'sales'"
    )
    after = await research_rows(history, ResearchFilters(by="sales", limit=2))
    assert after.at == h.AT + timedelta(minutes=2)
    assert after.items[1]["product_id"] == 103 and after.items[1]["units_30d"] == 25


async def test_a_summary_far_behind_the_newest_capture_is_not_used(
    history: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    await refresh_summary(history)
    line = legacy_line(h._simple(103, 5), (h.AT + timedelta(days=1)).isoformat()[:19])
    (tmp_path / "next-day.jsonl").write_text(line + "\n", encoding="utf-8")
    await h.load_file(history, config, tmp_path / "next-day.jsonl")
    page = await research_rows(history, ResearchFilters(by="sales", limit=2))
    assert page.at == h.AT + timedelta(days=1)  # refreshed a moment ago, but a day behind
    assert page.items[1]["product_id"] == 103
