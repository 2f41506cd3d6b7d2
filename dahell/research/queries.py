"""The research questions as queries: shared by `dahell top`, `/api/research` and the demo.

`research_rows` ranks products in two steps: one SQL statement filters and orders every product
by the sort key and returns one page of ids (with the total), then `items_for` builds the page's
item objects (sales, group, trend) for those ids only. Sort keys:

- `sales`: `units_30d / max(days_observed_30d, 7)` (see `sales.py`), then units, then id;
- `margin`: margin as a percentage of the sale price, products without a suggested price last;
- `suppliers`: distinct suppliers of the product's same-item group, members of one group
  together, cheapest first;
- `new`: first capture, newest first.

Filters are in `filters`, the item objects in `items`, one product's page in `product`; this
module is the public face of all four (`__all__`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from dahell.embedding_backlog import pending_count
from dahell.errors import InvalidParameter
from dahell.research import sales as sales_mod
from dahell.research.filters import (
    MAX_LIMIT,
    SORTS,
    ResearchFilters,
    parse_time,
)
from dahell.research.items import iso, items_for
from dahell.research.product import product_detail
from dahell.research.sales import SERIES_SQL, fetch_planned

__all__ = [
    "MAX_LIMIT",
    "SORTS",
    "InvalidParameter",
    "ResearchFilters",
    "ResearchPage",
    "items_for",
    "parse_time",
    "pending_embeddings",
    "product_detail",
    "research_rows",
]


@dataclass
class ResearchPage:
    at: datetime | None
    total: int
    items: list[dict[str, Any]] = field(default_factory=list)
    pending_embeddings: int = 0
    filters: ResearchFilters = field(default_factory=ResearchFilters)

    def to_json(self) -> dict[str, Any]:
        """The `/api/research` answer."""
        return {
            "at": iso(self.at),
            "by": self.filters.by,
            "total": self.total,
            "limit": self.filters.limit,
            "offset": self.filters.offset,
            "pending_embeddings": self.pending_embeddings,
            "items": self.items,
        }


# --- the ranking ---------------------------------------------------------------------------

_DAYS_30 = """round(greatest(extract(epoch from (
    least(p.last_seen_at, $1::timestamptz)
    - greatest(coalesce(f.first_seen, p.captured_at), $1::timestamptz - interval '30 days')
)) / 86400.0, 0)::numeric, 2)"""

_MARGIN_PCT = """CASE WHEN p.suggested_price IS NOT NULL AND p.sale_price > 0
    THEN 100.0 * (p.suggested_price - p.sale_price) / p.sale_price END"""

_FIRSTS = """firsts AS (
    SELECT product_id, min(snapshot_at) AS first_seen FROM product_stock_log GROUP BY product_id
)"""

_GROUPS = """grp AS (
    SELECT g.group_id, count(DISTINCT q.supplier_id) AS suppliers
    FROM research_groups AS g JOIN products AS q USING (product_id)
    GROUP BY g.group_id
)"""

_ORDER = {
    "sales": f"coalesce(s.units_30d, 0) / greatest({_DAYS_30}, {sales_mod.RANK_MIN_DAYS}) DESC,"
    " coalesce(s.units_30d, 0) DESC, p.product_id",
    "margin": f"{_MARGIN_PCT} DESC NULLS LAST, p.suggested_price - p.sale_price DESC NULLS LAST,"
    " p.product_id",
    "suppliers": "greatest(coalesce(grp.suppliers, 1), 1) DESC, rg.group_id NULLS LAST,"
    " p.sale_price ASC NULLS LAST, p.product_id",
    "new": "coalesce(f.first_seen, p.captured_at) DESC, p.product_id DESC",
}


def _rank_sql(filters: ResearchFilters, summary: bool = False) -> tuple[str, list[Any]]:
    """The statement that filters, orders and pages every product; $1 is the window end.

    `summary`: read units and first captures from `research_sales_summary` (exact for the
    newest capture) instead of computing them from the stock history.
    """
    args: list[Any] = [None, None]  # $1 at, $2 ids (NULL: all) for SERIES_SQL
    ctes: list[str] = []
    # First captures cost a pass over the stock history: only `sales`, `new` and an explicit
    # `at` (products not yet seen then are left out) need them.
    firsts = filters.by in ("sales", "new") or filters.at is not None
    joins = ["LEFT JOIN firsts AS f ON f.product_id = p.product_id"] if firsts else []
    if summary and firsts:
        head = "WITH none AS (SELECT 1)"
        joins = [
            "LEFT JOIN research_sales_summary AS s ON s.product_id = p.product_id",
            "LEFT JOIN research_sales_summary AS f ON f.product_id = p.product_id",
        ]
    elif filters.by == "sales":
        head = SERIES_SQL + ", " + _FIRSTS
        joins.append("LEFT JOIN sums AS s ON s.product_id = p.product_id")
    elif firsts:
        head = "WITH " + _FIRSTS
    else:
        head = "WITH none AS (SELECT 1)"
    if filters.by == "suppliers":
        ctes.append(_GROUPS)
        joins.append("LEFT JOIN research_groups AS rg ON rg.product_id = p.product_id")
        joins.append("LEFT JOIN grp ON grp.group_id = rg.group_id")
    where = [
        "coalesce(f.first_seen, p.captured_at) <= $1::timestamptz" if firsts else "true",
        "($1::timestamptz IS NOT NULL)",
        "($2::bigint[] IS NULL OR p.product_id = ANY($2::bigint[]))",
    ]
    if filters.category:
        args.append(filters.category)
        where.append(
            "EXISTS (SELECT 1 FROM product_categories AS pc JOIN categories AS c"
            " ON c.id = pc.category_id WHERE pc.product_id = p.product_id"
            f" AND lower(c.name) = lower(${len(args)}))"
        )
    if filters.city:
        args.append(filters.city)
        where.append(
            "EXISTS (SELECT 1 FROM product_stock AS ps JOIN warehouses AS wh"
            " ON wh.warehouse_id = ps.warehouse_id WHERE ps.product_id = p.product_id"
            " AND ps.variation_id = 0 AND ps.stock_qty > 0"
            f" AND lower(wh.city) = lower(${len(args)}))"
        )
    if filters.min_margin is not None:
        args.append(filters.min_margin)
        where.append(f"{_MARGIN_PCT} >= ${len(args)}::float8")
    args += [filters.limit, filters.offset]
    sql = (
        head
        + "".join(", " + c for c in ctes)
        + "\nSELECT p.product_id, count(*) OVER () AS total FROM products AS p\n"
        + "\n".join(joins)
        + "\nWHERE "
        + " AND ".join(where)
        + f"\nORDER BY {_ORDER[filters.by]}\nLIMIT ${len(args) - 1} OFFSET ${len(args)}"
    )
    return sql, args


async def research_rows(
    conn: asyncpg.Connection | asyncpg.Pool, filters: ResearchFilters
) -> ResearchPage:
    """One page of products ranked by `filters.by`, as item objects, with the window end used."""
    summary_at = None if filters.at else await sales_mod.usable_summary(conn)
    at = filters.at or summary_at or await sales_mod.newest_capture(conn)
    pending = await pending_embeddings(conn)
    if at is None:  # an empty database
        return ResearchPage(None, 0, [], pending, filters)
    summary = summary_at is not None
    sql, args = _rank_sql(filters, summary)
    args[0] = at
    rows = await fetch_planned(conn, sql, *args)
    total = rows[0]["total"] if rows else 0
    if not rows and filters.offset:
        first_page = ResearchFilters(**{**_fields(filters), "offset": 0})
        count_sql, count_args = _rank_sql(first_page, summary)
        count_args[0] = at
        first = await fetch_planned(conn, count_sql, *count_args)
        total = first[0]["total"] if first else 0
    items = await items_for(conn, [r["product_id"] for r in rows], at)
    return ResearchPage(at, total, items, pending, filters)


def _fields(filters: ResearchFilters) -> dict[str, Any]:
    return {k: getattr(filters, k) for k in ResearchFilters.__dataclass_fields__}


async def pending_embeddings(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Products still waiting for an embedding (the vectorizer's own count)."""
    return await pending_count(conn)
