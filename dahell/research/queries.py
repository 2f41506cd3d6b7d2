"""The research questions as queries: shared by `dahell top`, `/api/research` and the demo.

`research_rows` ranks products in two steps: one SQL statement filters and orders every product
by the sort key and returns one page of ids (with the total), then `items_for` builds the page's
item objects (sales, group, trend) for those ids only. Sort keys:

- `sales`: `units_30d / max(days_observed_30d, 7)` (see `sales.py`), then units, then id;
- `margin`: margin as a percentage of the sale price, products without a suggested price last;
- `suppliers`: distinct suppliers of the product's same-item group, members of one group
  together, cheapest first;
- `new`: first capture, newest first.

Filters: `category` (a category name, case-insensitive), `city` (a warehouse city where the
product has stock now, case-insensitive), `min_margin` (percent; products without a suggested
price are left out), `at` (where the sales windows end; prices, stock, cities and groups are
always the current ones). The item object is the contract in the research API brief; money is a
JSON number in pesos, null where unknown (never 0 for "no suggested price").

    InvalidParameter (a DahellError): a filter value that cannot be used; `parameter` names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import asyncpg

from dahell.embedding_backlog import pending_count
from dahell.errors import DahellError
from dahell.research import sales as sales_mod
from dahell.research.sales import SERIES_SQL, Sales, fetch_planned, sales_for

__all__ = [
    "MAX_LIMIT",
    "SORTS",
    "InvalidParameter",
    "ResearchFilters",
    "ResearchPage",
    "items_for",
    "parse_filters",
    "parse_time",
    "pending_embeddings",
    "product_detail",
    "research_rows",
]

SORTS = ("sales", "margin", "suppliers", "new")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TREND_DAYS = 30
DROPI_APP_URL = "https://app.dropi.co"


class InvalidParameter(DahellError):
    """A research filter value that cannot be used; `parameter` names the filter."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"invalid {parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


@dataclass(frozen=True)
class ResearchFilters:
    by: str = "sales"
    category: str | None = None
    city: str | None = None
    min_margin: float | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.by not in SORTS:
            raise InvalidParameter("by", f"{self.by!r} is not one of {', '.join(SORTS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidParameter("limit", f"must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.offset < 0:
            raise InvalidParameter("offset", f"must be 0 or more, got {self.offset}")
        if self.min_margin is not None and self.min_margin != self.min_margin:
            raise InvalidParameter("min_margin", "must be a number")
        if self.at is not None and self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=UTC))


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
            "at": _iso(self.at),
            "by": self.filters.by,
            "total": self.total,
            "limit": self.filters.limit,
            "offset": self.filters.offset,
            "pending_embeddings": self.pending_embeddings,
            "items": self.items,
        }


# --- parsing (CLI and HTTP share it) -------------------------------------------------------


def parse_time(text: str, parameter: str = "at") -> datetime:
    """ISO 8601 (`2026-11-30`, `2026-11-30T18:00`, `...Z`, `...-05:00`); naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidParameter(parameter, f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_filters(query: Mapping[str, str]) -> ResearchFilters:
    """Filters from strings (an HTTP query); `InvalidParameter` names the first bad one."""
    values: dict[str, Any] = {}
    if query.get("by"):
        values["by"] = query["by"].strip()
    for name in ("category", "city"):
        text = (query.get(name) or "").strip()
        if text:
            values[name] = text
    if (text := (query.get("min_margin") or "").strip()) != "":
        values["min_margin"] = _number(text, "min_margin")
    for name in ("limit", "offset"):
        if (text := (query.get(name) or "").strip()) != "":
            values[name] = _integer(text, name)
    if (text := (query.get("at") or "").strip()) != "":
        values["at"] = parse_time(text)
    return ResearchFilters(**values)


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(name, f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidParameter(name, f"{text!r} is not a finite number")
    return value


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidParameter(name, f"{text!r} is not an integer") from None


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


# --- the item objects ----------------------------------------------------------------------

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
class _Group:
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
    groups = await _groups(conn, [r["group_id"] for r in rows.values() if r["group_id"]], at)
    own = await sales_for(conn, at, [i for i in rows if not _in_groups(rows[i], groups)])
    for group in groups.values():
        own.update(group.sales)
    trends = await stock_trends(conn, list(rows), at)
    return [
        _item(rows[i], own[i], groups.get(rows[i]["group_id"]), trends.get(i, []))
        for i in product_ids
        if i in rows and i in own
    ]


def _in_groups(row: asyncpg.Record, groups: dict[int, _Group]) -> bool:
    return row["group_id"] is not None and row["group_id"] in groups


async def _groups(
    conn: asyncpg.Connection | asyncpg.Pool, group_ids: list[int], at: datetime
) -> dict[int, _Group]:
    if not group_ids:
        return {}
    members = await conn.fetch(MEMBERS_SQL, sorted(set(group_ids)))
    sales = await sales_for(conn, at, [m["product_id"] for m in members])
    groups: dict[int, _Group] = {}
    for m in members:
        groups.setdefault(m["group_id"], _Group(m["group_id"], [], sales)).members.append(m)
    return groups


def _item(
    row: asyncpg.Record, sales: Sales, group: _Group | None, trend: list[int]
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
        "first_seen_at": _iso(sales.first_seen),
        "last_seen_at": _iso(row["last_seen_at"]),
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
        "created_at": _iso(row["created_at"]),
        "last_seen_at": _iso(row["last_seen_at"]),
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
        entry["series"].append({"at": _iso(r["snapshot_at"]), "stock": r["stock_qty"]})
    return list(out.values())


async def _price_history(
    conn: asyncpg.Connection | asyncpg.Pool, product_id: int, at: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "at": _iso(r["captured_at"]),
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
    group = (await _groups(conn, [group_id], at)).get(group_id)
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


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None
