"""One product's page: its item object, stock and price history, and its group's offers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import asyncpg

from dahell.research import sales as sales_mod
from dahell.research.items import ITEM_SQL, iso, items_for, load_groups, money
from dahell.research.sales import Sales

DROPI_APP_URL = "https://app.dropi.co"

# --- one product ---------------------------------------------------------------------------

STOCK_HISTORY_SQL = """
SELECT l.warehouse_id, w.city, w.name, l.stock_qty, l.snapshot_at
FROM product_stock_log AS l LEFT JOIN warehouses AS w ON w.warehouse_id = l.warehouse_id
WHERE l.product_id = $1 AND l.snapshot_at <= $2
ORDER BY l.warehouse_id, l.snapshot_at, l.id
"""

PRICE_HISTORY_SQL = """
SELECT sale_price, suggested_price, captured_at FROM price_history
WHERE product_id = $1 AND variation_id = 0 AND captured_at <= $2
ORDER BY captured_at, id
"""

DISTANCES_SQL = """
SELECT g.product_id, e.embedding_visual <=> me.embedding_visual AS distance
FROM research_groups AS g
JOIN product_embeddings AS e ON e.product_id = g.product_id
JOIN product_embeddings AS me ON me.product_id = $1
WHERE g.group_id = $2 AND g.product_id <> $1
"""


async def product_detail(
    conn: asyncpg.Connection | asyncpg.Pool,
    product_id: int,
    at: datetime | None = None,
    *,
    app_url: str = DROPI_APP_URL,
) -> dict[str, Any] | None:
    """The product page's data (the `/api/products/<id>` answer); None for an unknown id."""
    at = at or await sales_mod.newest_capture(conn) or datetime.now(UTC)
    items = await items_for(conn, [product_id], at)
    if not items:
        return None
    item = items[0]
    row = await conn.fetchrow(ITEM_SQL, [product_id])
    assert row is not None
    search = quote(row["sku"] or row["title"] or str(product_id))
    product = {
        **item,
        "description": row["description"],
        "sku": row["sku"],
        "product_type": row["product_type"],
        "url": f"{app_url.rstrip('/')}/dashboard/search?search={search}",
        "created_at": iso(row["created_at"]),
        "last_seen_at": iso(row["last_seen_at"]),
    }
    return {
        "product": product,
        "stock": await _stock_history(conn, product_id, at),
        "prices": await _price_history(conn, product_id, at),
        "group": await _group_detail(conn, item, at),
    }


async def _stock_history(
    conn: asyncpg.Connection | asyncpg.Pool, product_id: int, at: datetime
) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for r in await conn.fetch(STOCK_HISTORY_SQL, product_id, at):
        entry = out.setdefault(
            r["warehouse_id"],
            {"warehouse_id": r["warehouse_id"], "city": r["city"], "name": r["name"], "series": []},
        )
        entry["series"].append({"at": iso(r["snapshot_at"]), "stock": r["stock_qty"]})
    return list(out.values())


async def _price_history(
    conn: asyncpg.Connection | asyncpg.Pool, product_id: int, at: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "at": iso(r["captured_at"]),
            "sale_price": money(r["sale_price"]),
            "suggested_price": money(r["suggested_price"]),
        }
        for r in await conn.fetch(PRICE_HISTORY_SQL, product_id, at)
    ]


async def _group_detail(
    conn: asyncpg.Connection | asyncpg.Pool, item: dict[str, Any], at: datetime
) -> dict[str, Any] | None:
    group_id = item["group_id"]
    if group_id is None:
        return None
    group = (await load_groups(conn, [group_id], at)).get(group_id)
    if group is None:
        return None
    rows = await conn.fetch(DISTANCES_SQL, item["product_id"], group_id)
    distances = {r["product_id"]: float(r["distance"]) for r in rows}
    cheapest = group.cheapest
    low, high = group.prices()
    return {
        "group_id": group_id,
        "suppliers": group.suppliers,
        "min_price": money(low),
        "max_price": money(high),
        "cheapest_product_id": cheapest["product_id"] if cheapest else None,
        "cheapest_supplier_name": cheapest["supplier_name"] if cheapest else None,
        "units_per_day_30d": group.units_per_day_30d(),
        "offers": [_offer(m, group.sales[m["product_id"]], distances) for m in group.members],
    }


def _offer(m: asyncpg.Record, sales: Sales, distances: dict[int, float]) -> dict[str, Any]:
    sale, suggested = m["sale_price"], m["suggested_price"]
    margin = suggested - sale if suggested is not None and sale is not None else None
    distance = distances.get(m["product_id"])
    return {
        "product_id": m["product_id"],
        "title": m["title"],
        "supplier_id": m["supplier_id"],
        "supplier_name": m["supplier_name"],
        "sale_price": money(sale),
        "suggested_price": money(suggested),
        "margin": money(margin),
        "image_url": m["image_url"],
        "stock": m["stock"],
        "units_per_day_30d": sales.per_day_30d,
        "distance": round(distance, 6) if distance is not None else None,
    }
