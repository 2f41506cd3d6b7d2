"""Estimated sales: stock decreases between consecutive captures, per product and warehouse.

The rules (the SQL below and the pure functions mirror each other; tests hold both to the same
hand-made answers):

- **A sale is a decrease.** `product_stock_log` (and `variation_stock_log`) hold a row when a
  stock value is first seen or changes, at its capture time. Between two consecutive rows of one
  (product, variation, warehouse), a fall of N units is N units sold, counted at the capture
  that saw the lower value. A rise is a restock: 0 sold (the units sold inside a capture interval
  that also had a restock are invisible; the estimate is a floor).
- **The first sighting is not a sale**, and neither is a vanish: when a product (or one of its
  warehouses) is no longer in the catalog the loader writes nothing, so no fall is invented. A
  product that comes back lower than it left counts the difference, at the capture that saw it.
- **VARIABLE products sum their variations.** Their falls are measured per variation
  (`variation_stock_log`) and summed, so a variation that sells while another is restocked in
  the same interval still counts; a VARIABLE product without variation rows falls back to its
  product-level rows.
- **Windows** are the last 7 and 30 days ending at `at`: the newest capture in the database
  (`newest_capture`) unless the caller gives one. A fall counts in a window when
  `at - N days < captured <= at`; the value before the window comes from the last row before it.
- **Days observed** in a window: from the product's first capture (or the window's start, if
  later) to its last sighting (or `at`, if earlier), in days, at least 0. `units_per_day` is
  units / days observed, null when that is 0 (a product seen once has no rate yet).
- **Ranking by sales** uses `units / max(days observed, RANK_MIN_DAYS)` over 30 days: the
  days a product was not yet observed, up to a week, count as days without sales. A product seen
  for two days that sold 10 ranks as 10/7 a day, not 5: short histories are shrunk toward zero
  until there is a week of evidence, and after that the plain observed rate decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

__all__ = [
    "RANK_MIN_DAYS",
    "WINDOWS",
    "Sales",
    "days_observed",
    "fetch_planned",
    "newest_capture",
    "per_day",
    "rank_rate",
    "refresh_summary",
    "sales_for",
    "summary_is_current",
    "units_sold",
    "usable_summary",
]

#: The windows, in days.
WINDOWS = (7, 30)
#: The fewest days a sales rate is divided by when ranking (see the module docstring).
RANK_MIN_DAYS = 7.0
DAY_S = 86400.0

# Rows of each stock series inside the 30-day window, with the value each row replaced: the
# previous row in the window, else the last row before it (index lookup, once per series, as
# COALESCE evaluates its second argument only when the first is NULL). A product with variation
# rows is measured per variation only.
SERIES_SQL = """
WITH w AS (
    SELECT $1::timestamptz AS at_, $1::timestamptz - interval '30 days' AS s30
), rows_ AS (
    SELECT l.id, l.product_id, 0::bigint AS variation_id, l.warehouse_id, l.stock_qty,
           l.snapshot_at
    FROM product_stock_log AS l, w
    WHERE l.snapshot_at > w.s30 AND l.snapshot_at <= w.at_
      AND ($2::bigint[] IS NULL OR l.product_id = ANY($2::bigint[]))
      AND NOT EXISTS (SELECT 1 FROM variation_stock_log AS x WHERE x.product_id = l.product_id)
    UNION ALL
    SELECT v.id, v.product_id, v.variation_id, v.warehouse_id, v.stock_qty, v.snapshot_at
    FROM variation_stock_log AS v, w
    WHERE v.snapshot_at > w.s30 AND v.snapshot_at <= w.at_
      AND ($2::bigint[] IS NULL OR v.product_id = ANY($2::bigint[]))
), steps AS (
    SELECT r.product_id, r.snapshot_at,
           coalesce(
               lag(r.stock_qty) OVER k,
               CASE WHEN r.variation_id = 0 THEN (
                   SELECT b.stock_qty FROM product_stock_log AS b
                   WHERE b.product_id = r.product_id AND b.warehouse_id = r.warehouse_id
                     AND b.snapshot_at <= w.s30
                   ORDER BY b.snapshot_at DESC, b.id DESC LIMIT 1)
               ELSE (
                   SELECT b.stock_qty FROM variation_stock_log AS b
                   WHERE b.product_id = r.product_id AND b.variation_id = r.variation_id
                     AND b.warehouse_id = r.warehouse_id AND b.snapshot_at <= w.s30
                   ORDER BY b.snapshot_at DESC, b.id DESC LIMIT 1)
               END
           ) - r.stock_qty AS fall
    FROM rows_ AS r, w
    WINDOW k AS (PARTITION BY r.product_id, r.variation_id, r.warehouse_id
                 ORDER BY r.snapshot_at, r.id)
), sums AS (
    SELECT product_id,
           sum(greatest(fall, 0)) FILTER (
               WHERE snapshot_at > $1::timestamptz - interval '7 days')::bigint AS units_7d,
           sum(greatest(fall, 0))::bigint AS units_30d
    FROM steps
    GROUP BY product_id
)
"""

#: Per product: units in both windows, first capture, last sighting. $1 at, $2 ids or NULL.
SALES_SQL = (
    SERIES_SQL
    + """
, firsts AS (
    SELECT product_id, min(snapshot_at) AS first_seen
    FROM product_stock_log
    WHERE $2::bigint[] IS NULL OR product_id = ANY($2::bigint[])
    GROUP BY product_id
)
SELECT p.product_id, coalesce(s.units_7d, 0) AS units_7d, coalesce(s.units_30d, 0) AS units_30d,
       coalesce(f.first_seen, p.captured_at) AS first_seen, p.last_seen_at
FROM products AS p
LEFT JOIN sums AS s USING (product_id)
LEFT JOIN firsts AS f USING (product_id)
WHERE $2::bigint[] IS NULL OR p.product_id = ANY($2::bigint[])
"""
)

#: What the summary was computed from: the window end and the history's last row ids.
SOURCE_SQL = """
SELECT greatest((SELECT max(last_seen_at) FROM products),
                (SELECT max(snapshot_at) FROM product_stock_log)) AS at_,
       coalesce((SELECT max(id) FROM product_stock_log), 0)::text || ':'
       || coalesce((SELECT max(id) FROM variation_stock_log), 0)::text AS ids
"""

SUMMARY_STATE_SQL = """
SELECT watermark, value, updated_at > now() - make_interval(secs => $1) AS recent
FROM research_upkeep WHERE name = 'sales'
"""

#: A summary refreshed this recently is used even if captures arrived since (its window end is
#: then the answer's `at`): the groups stage refreshes it every minute while captures arrive.
SUMMARY_MAX_AGE_S = 180.0

NEWEST_CAPTURE_SQL = """
SELECT greatest((SELECT max(last_seen_at) FROM products),
                (SELECT max(snapshot_at) FROM product_stock_log))
"""


@dataclass(frozen=True, slots=True)
class Sales:
    """One product's estimate for the windows ending at `at`."""

    product_id: int
    units_7d: int
    units_30d: int
    first_seen: datetime
    last_seen: datetime
    at: datetime

    @property
    def days_7d(self) -> float:
        return days_observed(self.first_seen, self.last_seen, self.at, 7)

    @property
    def days_30d(self) -> float:
        return days_observed(self.first_seen, self.last_seen, self.at, 30)

    @property
    def per_day_7d(self) -> float | None:
        return per_day(self.units_7d, self.days_7d)

    @property
    def per_day_30d(self) -> float | None:
        return per_day(self.units_30d, self.days_30d)

    @property
    def rank(self) -> float:
        return rank_rate(self.units_30d, self.days_30d)


async def newest_capture(conn: asyncpg.Connection | asyncpg.Pool) -> datetime | None:
    """The newest capture time in the database: where the windows end by default."""
    value: datetime | None = await conn.fetchval(NEWEST_CAPTURE_SQL)
    return value


async def sales_for(
    conn: asyncpg.Connection | asyncpg.Pool, at: datetime, product_ids: Sequence[int] | None
) -> dict[int, Sales]:
    """Each product's sales in the windows ending at `at` (`product_ids` None: all products)."""
    ids = None if product_ids is None else list(product_ids)
    rows = await fetch_planned(conn, SALES_SQL, at, ids)
    return {
        r["product_id"]: Sales(
            r["product_id"], r["units_7d"], r["units_30d"], r["first_seen"], r["last_seen_at"], at
        )
        for r in rows
    }


async def fetch_planned(
    conn: asyncpg.Connection | asyncpg.Pool, sql: str, *args: object
) -> list[asyncpg.Record]:
    """`fetch`, planned for these parameter values every time.

    asyncpg prepares and caches statements; after five runs PostgreSQL may switch to a generic
    plan, which for the window queries (the time bounds are parameters) was 15-20x slower
    (0.8 s -> 15 s at 25,000 products). `force_custom_plan` keeps the plan made for the values.
    """
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as one:
            return await fetch_planned(one, sql, *args)
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows


# --- the rules as pure functions (the SQL's reference) -------------------------------------


def units_sold(
    series: Iterable[tuple[datetime, int]],
    start: datetime,
    end: datetime,
    before: int | None = None,
) -> int:
    """Units sold in (start, end] by one stock series (capture time, stock), oldest first.

    `before` is the value the series held at `start` (None: first seen inside the window).
    """
    previous, sold = before, 0
    for when, qty in series:
        if when <= start:
            previous = qty
            continue
        if when > end:
            break
        if previous is not None and qty < previous:
            sold += previous - qty
        previous = qty
    return sold


def days_observed(first_seen: datetime, last_seen: datetime, at: datetime, window: int) -> float:
    """Days of the `window` days ending at `at` in which the product was observed (2 decimals)."""
    start = at - timedelta(days=window)
    span = (min(last_seen, at) - max(first_seen, start)).total_seconds() / DAY_S
    return round(max(span, 0.0), 2)


def per_day(units: int, days: float) -> float | None:
    """Units per observed day (2 decimals); None when nothing was observed for any time."""
    return round(units / days, 2) if days > 0 else None


def rank_rate(units: int, days: float) -> float:
    """The rate `top --by sales` ranks by: units over at least RANK_MIN_DAYS days."""
    return units / max(days, RANK_MIN_DAYS)


# --- the summary the ranking reads while it is exact ---------------------------------------


async def _source(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[datetime | None, str]:
    row = await conn.fetchrow(SOURCE_SQL)
    assert row is not None
    return row["at_"], row["ids"]


async def summary_is_current(conn: asyncpg.Connection | asyncpg.Pool) -> datetime | None:
    """The summary's window end when it matches the database exactly, else None."""
    state = await conn.fetchrow(SUMMARY_STATE_SQL, SUMMARY_MAX_AGE_S)
    if state is None or state["watermark"] is None:
        return None
    at, ids = await _source(conn)
    current = at is not None and state["watermark"] == at and state["value"] == ids
    return at if current else None


async def usable_summary(conn: asyncpg.Connection | asyncpg.Pool) -> datetime | None:
    """The window end to rank from the summary with, or None (rank live).

    Usable when exact, or when refreshed within SUMMARY_MAX_AGE_S and its window end is at most
    that far behind the newest capture (a pass in progress: the answer is then as of its `at`).
    A summary days behind (a backfill, or the demo's simulated days) is never used.
    """
    state = await conn.fetchrow(SUMMARY_STATE_SQL, SUMMARY_MAX_AGE_S)
    if state is None or state["watermark"] is None:
        return None
    summary_at: datetime = state["watermark"]
    at, ids = await _source(conn)
    if at is None:
        return None
    if summary_at == at and state["value"] == ids:
        return summary_at
    behind = (at - summary_at).total_seconds()
    return summary_at if state["recent"] and 0 <= behind <= SUMMARY_MAX_AGE_S else None


async def refresh_summary(pool: asyncpg.Pool) -> int | None:
    """Recompute `research_sales_summary` if the history moved on; rows written, or None.

    One statement over the 30-day windows of every product (the same SQL as `sales_for`), in
    one transaction, so readers see the old summary or the new one, never half of each.
    """
    if await summary_is_current(pool):
        return None
    async with pool.acquire() as conn, conn.transaction():
        at, ids = await _source(conn)
        if at is None:
            return None
        await conn.execute("DELETE FROM research_sales_summary")
        status = await conn.execute(
            "INSERT INTO research_sales_summary (product_id, units_7d, units_30d, first_seen)"
            " SELECT product_id, units_7d, units_30d, first_seen FROM (" + SALES_SQL + ") AS s",
            at,
            None,
        )
        await conn.execute(
            "INSERT INTO research_upkeep (name, watermark, value) VALUES ('sales', $1, $2)"
            " ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark,"
            " value = excluded.value, updated_at = now()",
            at,
            ids,
        )
    return int(status.split()[-1])
