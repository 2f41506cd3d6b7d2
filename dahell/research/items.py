"""The item objects of a research page: one product with its sales, its group and its trend.

The item object is the contract in the research API brief; money is a JSON number in pesos,
null where unknown (never 0 for "no suggested price"). A product in a same-item group also
carries the group's supplier count, price range and units per day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from dahell.research.sales import Sales, sales_for

TREND_DAYS = 30

ITEM_SQL = """
SELECT p.product_id, p.title, p.supplier_id, s.name AS supplier_name, s.store_name,
       p.url_image_s3 AS image_url, p.sale_price, p.suggested_price, p.description, p.sku,
       p.product_type, p.created_at, p.last_seen_at,
       ARRAY(SELECT c.name FROM product_categories AS pc JOIN categories AS c
             ON c.id = pc.category_id WHERE pc.product_id = p.product_id ORDER BY c.name)
           AS categories,
       ARRAY(SELECT DISTINCT wh.city FROM product_stock AS ps JOIN warehouses AS wh
             ON wh.warehouse_id = ps.warehouse_id
             WHERE ps.product_id = p.product_id AND ps.variation_id = 0 AND ps.stock_qty > 0
               AND wh.city IS NOT NULL ORDER BY wh.city) AS cities,
       (SELECT coalesce(sum(ps.stock_qty), 0) FROM product_stock AS ps
        WHERE ps.product_id = p.product_id AND ps.variation_id = 0)::bigint AS stock,
       g.group_id
FROM products AS p
LEFT JOIN suppliers AS s ON s.supplier_id = p.supplier_id
LEFT JOIN research_groups AS g ON g.product_id = p.product_id
WHERE p.product_id = ANY($1::bigint[])
"""

MEMBERS_SQL = """
SELECT g.group_id, g.product_id, p.title, p.supplier_id, s.name AS supplier_name,
       p.url_image_s3 AS image_url, p.sale_price, p.suggested_price,
       (SELECT coalesce(sum(ps.stock_qty), 0) FROM product_stock AS ps
        WHERE ps.product_id = p.product_id AND ps.variation_id = 0)::bigint AS stock
FROM research_groups AS g
JOIN products AS p ON p.product_id = g.product_id
LEFT JOIN suppliers AS s ON s.supplier_id = p.supplier_id
WHERE g.group_id = ANY($1::bigint[])
ORDER BY g.group_id, p.sale_price ASC NULLS LAST, g.product_id
"""

TREND_SQL = """
SELECT product_id, warehouse_id, stock_qty, snapshot_at FROM product_stock_log
WHERE product_id = ANY($1::bigint[]) AND snapshot_at <= $2 AND snapshot_at > $2 - interval '30 days'
UNION ALL
(SELECT DISTINCT ON (product_id, warehouse_id) product_id, warehouse_id, stock_qty, snapshot_at
 FROM product_stock_log
 WHERE product_id = ANY($1::bigint[]) AND snapshot_at <= $2 - interval '30 days'
 ORDER BY product_id, warehouse_id, snapshot_at DESC, id DESC)
"""


@dataclass
class Group:
    """A same-item group as the items show it: its members, cheapest first, and their sales."""

    group_id: int
    members: list[asyncpg.Record]
    sales: dict[int, Sales]

    @property
    def suppliers(self) -> int:
        return max(len({m["supplier_id"] for m in self.members if m["supplier_id"] is not None}), 1)

    @property
    def cheapest(self) -> asyncpg.Record | None:
        priced = [m for m in self.members if m["sale_price"] is not None]
        return min(priced, key=lambda m: (m["sale_price"], m["product_id"])) if priced else None

    def prices(self) -> tuple[Decimal | None, Decimal | None]:
        values = [m["sale_price"] for m in self.members if m["sale_price"] is not None]
        return (min(values), max(values)) if values else (None, None)

    def units_per_day_30d(self) -> float:
        rates = (self.sales[m["product_id"]].per_day_30d for m in self.members)
        return round(sum(r for r in rates if r is not None), 2)


async def items_for(
    conn: asyncpg.Connection | asyncpg.Pool, product_ids: Sequence[int], at: datetime
) -> list[dict[str, Any]]:
    """Item objects for `product_ids`, in that order (unknown ids are skipped)."""
    if not product_ids:
        return []
    rows = {r["product_id"]: r for r in await conn.fetch(ITEM_SQL, list(product_ids))}
    groups = await load_groups(conn, [r["group_id"] for r in rows.values() if r["group_id"]], at)
    own = await sales_for(conn, at, [i for i in rows if not _in_groups(rows[i], groups)])
    for group in groups.values():
        own.update(group.sales)
    trends = await stock_trends(conn, list(rows), at)
    return [
        _item(rows[i], own[i], groups.get(rows[i]["group_id"]), trends.get(i, []))
        for i in product_ids
        if i in rows and i in own
    ]


def _in_groups(row: asyncpg.Record, groups: dict[int, Group]) -> bool:
    return row["group_id"] is not None and row["group_id"] in groups


async def load_groups(
    conn: asyncpg.Connection | asyncpg.Pool, group_ids: list[int], at: datetime
) -> dict[int, Group]:
    """The groups `group_ids` with their members and the members' sales up to `at`."""
    if not group_ids:
        return {}
    members = await conn.fetch(MEMBERS_SQL, sorted(set(group_ids)))
    sales = await sales_for(conn, at, [m["product_id"] for m in members])
    groups: dict[int, Group] = {}
    for m in members:
        groups.setdefault(m["group_id"], Group(m["group_id"], [], sales)).members.append(m)
    return groups


def _item(
    row: asyncpg.Record, sales: Sales, group: Group | None, trend: list[int]
) -> dict[str, Any]:
    sale, suggested = row["sale_price"], row["suggested_price"]
    margin = suggested - sale if suggested is not None and sale is not None else None
    if group is not None:
        low, high = group.prices()
        suppliers, units_group = group.suppliers, group.units_per_day_30d()
    else:
        low = high = sale
        suppliers, units_group = 1, sales.per_day_30d or 0.0
    return {
        "product_id": row["product_id"],
        "title": row["title"],
        "supplier_id": row["supplier_id"],
        "supplier_name": row["store_name"] or row["supplier_name"],
        "image_url": row["image_url"],
        "categories": list(row["categories"]),
        "cities": list(row["cities"]),
        "sale_price": money(sale),
        "suggested_price": money(suggested),
        "margin": money(margin),
        "margin_pct": margin_pct(sale, suggested),
        "stock": row["stock"],
        "units_7d": sales.units_7d,
        "units_30d": sales.units_30d,
        "units_per_day_7d": sales.per_day_7d,
        "units_per_day_30d": sales.per_day_30d,
        "days_observed": sales.days_30d,
        "days_observed_7d": sales.days_7d,
        "sales_rank_rate": round(sales.rank, 4),
        "first_seen_at": iso(sales.first_seen),
        "last_seen_at": iso(row["last_seen_at"]),
        "group_id": row["group_id"],
        "group_suppliers": suppliers,
        "group_min_price": money(low),
        "group_max_price": money(high),
        "group_units_per_day_30d": units_group,
        "stock_trend": trend,
    }


def money(value: Decimal | None) -> int | float | None:
    """Pesos as a JSON number: an int when whole (always, in practice), null when unknown."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def margin_pct(sale: Decimal | None, suggested: Decimal | None) -> float | None:
    """100 * (suggested - sale) / sale, 1 decimal; None without both prices or a sale price."""
    if sale is None or suggested is None or sale <= 0:
        return None
    return round(float(100 * (suggested - sale) / sale), 1)


async def stock_trends(
    conn: asyncpg.Connection | asyncpg.Pool, product_ids: list[int], at: datetime
) -> dict[int, list[int]]:
    """Total stock at the end of each of the last 30 days (oldest first), per product.

    Days before the product's first capture are left out, so the list can be shorter.
    """
    rows = await conn.fetch(TREND_SQL, product_ids, at)
    series: dict[int, dict[int, list[tuple[datetime, int]]]] = {}
    for r in rows:
        by_wh = series.setdefault(r["product_id"], {})
        by_wh.setdefault(r["warehouse_id"], []).append((r["snapshot_at"], r["stock_qty"]))
    return {pid: daily_totals(by_wh, at, TREND_DAYS) for pid, by_wh in series.items()}


def daily_totals(
    by_warehouse: Mapping[int, list[tuple[datetime, int]]], at: datetime, days: int
) -> list[int]:
    """Sum over warehouses of the last value at or before each day's end, oldest day first."""
    ordered = [sorted(points) for points in by_warehouse.values()]
    first = min(points[0][0] for points in ordered if points)
    out: list[int] = []
    for back in range(days - 1, -1, -1):
        end = at - timedelta(days=back)
        if end < first:
            continue
        out.append(sum(_value_at(points, end) for points in ordered))
    return out


def _value_at(points: list[tuple[datetime, int]], when: datetime) -> int:
    value = 0
    for t, qty in points:
        if t > when:
            break
        value = qty
    return value


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC; None stays None (JSON null)."""
    return value.astimezone(UTC).isoformat() if value is not None else None
