"""Look-alike products: nearest neighbours by image embedding (pgvector, HNSW, cosine).

`find_similar` returns the product and its `k` nearest other products by cosine distance
(`<=>`, 0 = same direction, 2 = opposite) through the HNSW index; `to_json` makes the result
JSON-able, with money as decimal **strings** (exactly as stored, e.g. "45900.00", or null) and
distances as floats; `render_table` draws it for a terminal. `search_products` finds products
by title or id for the status page's browser.

    SimilarError            (a DahellError)
    ├── ProductNotFound     no product with that id
    └── NoEmbedding         the product has no embedding yet; `state` and `reason` say why
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from dahell.embedding_backlog import pending_count
from dahell.errors import DahellError

__all__ = [
    "MAX_K",
    "NoEmbedding",
    "ProductInfo",
    "ProductNotFound",
    "SimilarError",
    "SimilarResult",
    "find_similar",
    "render_table",
    "search_products",
    "to_json",
]

#: The most neighbours one query returns (pgvector's hnsw.ef_search tops out at 1000).
MAX_K = 500

PRODUCT_SQL = """
SELECT p.product_id, p.title, p.supplier_id, s.name AS supplier_name, s.store_name,
       p.sale_price, p.suggested_price, p.url_image_s3 AS image_url,
       e.embedding_visual, j.state, j.reason, j.detail, j.attempts, j.next_attempt_at
FROM products AS p
LEFT JOIN suppliers AS s ON s.supplier_id = p.supplier_id
LEFT JOIN product_embeddings AS e ON e.product_id = p.product_id
LEFT JOIN embedding_jobs AS j ON j.product_id = p.product_id
WHERE p.product_id = $1
"""

# The vector is a parameter (not a subquery) so the planner orders by the HNSW index.
NEIGHBOURS_SQL = """
SELECT n.product_id, n.distance, p.title, p.supplier_id, s.name AS supplier_name, s.store_name,
       p.sale_price, p.suggested_price, p.url_image_s3 AS image_url
FROM (
    SELECT e.product_id, e.embedding_visual <=> $1 AS distance
    FROM product_embeddings AS e
    ORDER BY e.embedding_visual <=> $1
    LIMIT $2
) AS n
JOIN products AS p ON p.product_id = n.product_id
LEFT JOIN suppliers AS s ON s.supplier_id = p.supplier_id
WHERE n.product_id <> $3
ORDER BY n.distance, n.product_id
LIMIT $4
"""

SEARCH_SQL = """
SELECT p.product_id, p.title, p.url_image_s3 AS image_url, p.sale_price,
       s.name AS supplier_name, e.product_id IS NOT NULL AS has_embedding
FROM products AS p
LEFT JOIN suppliers AS s ON s.supplier_id = p.supplier_id
LEFT JOIN product_embeddings AS e ON e.product_id = p.product_id
WHERE p.product_id = $1 OR p.title ILIKE $2 ESCAPE '\\'
ORDER BY p.product_id = $1 DESC, has_embedding DESC, p.product_id
LIMIT $3
"""

#: An empty search: the products embedded most recently (what the status page shows first).
RECENT_SQL = """
SELECT p.product_id, p.title, p.url_image_s3 AS image_url, p.sale_price,
       s.name AS supplier_name, true AS has_embedding
FROM product_embeddings AS e
JOIN products AS p ON p.product_id = e.product_id
LEFT JOIN suppliers AS s ON s.supplier_id = p.supplier_id
ORDER BY e.processed_at DESC, e.product_id
LIMIT $1
"""


class SimilarError(DahellError):
    """A look-alike query that cannot be answered; `code` is stable for HTTP and scripts."""

    code = "similar_error"


class ProductNotFound(SimilarError):
    code = "product_not_found"

    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} does not exist")
        self.product_id = product_id


class NoEmbedding(SimilarError):
    code = "no_embedding"

    def __init__(self, product_id: int, state: str | None, reason: str | None, why: str) -> None:
        super().__init__(f"product {product_id} has no embedding yet: {why}")
        self.product_id = product_id
        self.state = state
        self.reason = reason


@dataclass(frozen=True)
class ProductInfo:
    product_id: int
    title: str | None
    supplier_id: int | None
    supplier_name: str | None
    store_name: str | None
    sale_price: Decimal | None
    suggested_price: Decimal | None
    image_url: str | None
    distance: float | None = None  # None for the queried product itself


@dataclass(frozen=True)
class SimilarResult:
    product: ProductInfo
    neighbours: list[ProductInfo]
    k: int
    #: Products still waiting for an embedding (pending, claimed or retrying): look-alikes
    #: among them cannot be in `neighbours` yet.
    waiting: int = 0


async def find_similar(pool: asyncpg.Pool, product_id: int, k: int) -> SimilarResult:
    """The product and its `k` nearest others by image; `ProductNotFound` / `NoEmbedding`."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    async with pool.acquire() as conn:
        row = await conn.fetchrow(PRODUCT_SQL, product_id)
        if row is None:
            raise ProductNotFound(product_id)
        if row["embedding_visual"] is None:
            why = _why_missing(row)
            if row["state"] in ("pending", "claimed"):
                why += f"; {await pending_count(conn):,} product(s) wait for one in all"
            raise NoEmbedding(product_id, row["state"], row["reason"], why)
        async with conn.transaction():
            # The index returns at most ef_search rows; ask for enough to drop the product itself.
            await conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(2 * k + 1, 1000))}")
            rows = await conn.fetch(NEIGHBOURS_SQL, row["embedding_visual"], k + 1, product_id, k)
        waiting = await pending_count(conn)
    return SimilarResult(_info(row), [_info(r) for r in rows], k, waiting)


def _why_missing(row: asyncpg.Record) -> str:
    state = row["state"]
    if state is None:
        return "no embedding job (the product has no image URL the loader recorded)"
    if state == "failed":
        final = row["next_attempt_at"] is not None and row["next_attempt_at"].year > 9000
        when = "for good" if final else f"retry due {_when(row['next_attempt_at'])}"
        detail = f" ({row['detail']})" if row["detail"] else ""
        return f"failed: {row['reason']}{detail}, after {row['attempts']} attempt(s), {when}"
    if state == "claimed":
        return "being embedded now (claimed by a worker)"
    if state == "done":
        return "marked done but its embedding is missing (deleted?)"
    return "pending: waiting for the vectorizer"


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "now"


def _info(row: asyncpg.Record) -> ProductInfo:
    keys = row.keys()
    return ProductInfo(
        product_id=row["product_id"],
        title=row["title"],
        supplier_id=row["supplier_id"],
        supplier_name=row["supplier_name"],
        store_name=row["store_name"],
        sale_price=row["sale_price"],
        suggested_price=row["suggested_price"],
        image_url=row["image_url"],
        distance=float(row["distance"]) if "distance" in keys else None,
    )


def to_json(result: SimilarResult) -> dict[str, Any]:
    """JSON-able dict: prices as decimal strings (or null), distances as floats."""
    return {
        "product": _info_json(result.product),
        "k": result.k,
        "neighbours": [_info_json(n) for n in result.neighbours],
        "waiting": result.waiting,
    }


def _info_json(info: ProductInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "product_id": info.product_id,
        "title": info.title,
        "supplier_id": info.supplier_id,
        "supplier_name": info.supplier_name,
        "store_name": info.store_name,
        "sale_price": _money(info.sale_price),
        "suggested_price": _money(info.suggested_price),
        "image_url": info.image_url,
    }
    if info.distance is not None:
        out["distance"] = round(info.distance, 6)
    return out


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def render_table(result: SimilarResult, width: int = 120) -> str:
    """The result as a terminal table (rich), the queried product in the title."""
    me = result.product
    table = Table(
        title=f"Look-alikes of {me.product_id}: {me.title or '(no title)'}"
        f" — {_supplier(me)}, sale {_money(me.sale_price) or '-'}",
        title_justify="left",
    )
    for name, justify in (
        ("#", "right"),
        ("distance", "right"),
        ("product", "right"),
        ("title", "left"),
        ("supplier", "left"),
        ("sale", "right"),
        ("suggested", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rank, n in enumerate(result.neighbours, 1):
        table.add_row(
            str(rank),
            f"{n.distance:.4f}" if n.distance is not None else "-",
            str(n.product_id),
            n.title or "",
            _supplier(n),
            _money(n.sale_price) or "-",
            _money(n.suggested_price) or "-",
        )
    captions = ["no other product has an embedding yet"] if not result.neighbours else []
    if result.waiting:
        captions.append(
            f"{result.waiting:,} products still wait for an embedding: "
            "their look-alikes are not shown yet"
        )
    table.caption = "; ".join(captions) or None
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue()


def _supplier(info: ProductInfo) -> str:
    name = info.store_name or info.supplier_name
    if name and info.supplier_id is not None:
        return f"{name} ({info.supplier_id})"
    return name or (str(info.supplier_id) if info.supplier_id is not None else "-")


async def search_products(pool: asyncpg.Pool, query: str, limit: int) -> list[dict[str, Any]]:
    """Products whose title contains `query` (case-insensitive) or whose id is `query`; for an
    empty query, the products embedded most recently."""
    text = query.strip()
    limit = max(1, min(limit, 200))
    if not text:
        rows = await pool.fetch(RECENT_SQL, limit)
    else:
        # ASCII only: "²" and "١٢٣" are str.isdigit() too; 18 digits stay within bigint.
        product_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await pool.fetch(SEARCH_SQL, product_id, pattern, limit)
    return [
        {
            "product_id": r["product_id"],
            "title": r["title"],
            "image_url": r["image_url"],
            "sale_price": _money(r["sale_price"]),
            "supplier": r["supplier_name"],
            "supplier_name": r["supplier_name"],
            "has_embedding": r["has_embedding"],
        }
        for r in rows
    ]
