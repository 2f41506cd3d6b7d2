"""The plan written: shared rows, staging COPY and one merge per table, history COPYed
straight into its tables, embedding work set pending.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from dahell.catalog_store.plan import _fold_warehouses, _Plan
from dahell.catalog_store.sql import (
    _INSERT_CATEGORIES,
    _INSERT_PRICES,
    _PENDING_EMBEDDINGS,
    _PRODUCT_COLUMNS,
    _TOUCH_PRODUCTS,
    _UPSERT_PRODUCTS,
    _UPSERT_STOCK,
    _UPSERT_SUPPLIERS,
    _UPSERT_VARIATIONS,
    _UPSERT_WAREHOUSES,
)
from dahell.catalog_store.state import _State, _WarehouseRow
from dahell.dropi import ProductRecord, Supplier


async def _write(conn: asyncpg.Connection, plan: _Plan, before: _State) -> int:
    """Write the plan; return how many products' embeddings became pending."""
    records = [rec for rec, _, _ in plan.products.values()]
    await _write_suppliers(conn, plan.accepted)
    await _write_warehouses(conn, plan.accepted, before.warehouses)
    if plan.products:
        await conn.copy_records_to_table(
            "stage_products", records=_product_rows(plan), columns=_PRODUCT_COLUMNS
        )
        await conn.execute(_UPSERT_PRODUCTS)
        await _write_categories(conn, records, plan.accepted, before.categories)
        await _write_variations(conn, plan.accepted)
    if plan.touched:
        await conn.execute(_TOUCH_PRODUCTS, list(plan.touched), list(plan.touched.values()))
    if plan.stock_now:
        rows = [(k[0], k[1], k[2], qty, when) for k, (qty, when) in plan.stock_now.items()]
        await conn.copy_records_to_table("stage_stock", records=rows)
        await conn.execute(_UPSERT_STOCK)
    await _copy(
        conn,
        "product_stock_log",
        plan.stock_log,
        ("product_id", "warehouse_id", "stock_qty", "snapshot_at"),
    )
    await _copy(
        conn,
        "variation_stock_log",
        plan.variation_stock_log,
        ("product_id", "variation_id", "warehouse_id", "stock_qty", "snapshot_at"),
    )
    if plan.price_log:
        prices = [
            (p, v, _text(sale), _text(suggested), at)
            for p, v, sale, suggested, at in plan.price_log
        ]
        await conn.copy_records_to_table("stage_prices", records=prices)
        await conn.execute(_INSERT_PRICES)
    return await _write_images(conn, plan.image_changes, before.job_urls)


async def _copy(
    conn: asyncpg.Connection, table: str, rows: list[Any], columns: tuple[str, ...]
) -> None:
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=columns)


def _product_rows(plan: _Plan) -> list[tuple[Any, ...]]:
    return [
        (
            rec.product_id,
            rec.supplier.supplier_id if rec.supplier else None,
            rec.sku,
            rec.title,
            rec.description,
            _text(rec.sale_price),
            _text(rec.suggested_price),
            rec.product_type,
            rec.image_url,
            seen,
            rec.raw_json,
            captured,
            rec.content_hash,
        )
        for rec, captured, seen in plan.products.values()
    ]


async def _write_suppliers(
    conn: asyncpg.Connection, accepted: list[tuple[ProductRecord, datetime]]
) -> None:
    """Each supplier takes its newest capture in the batch (ties: the later line); the
    upsert's guard then keeps whatever newer capture the table already holds."""
    newest: dict[int, tuple[Supplier, datetime]] = {}
    for rec, when in accepted:
        supplier = rec.supplier
        if supplier is None:
            continue
        old = newest.get(supplier.supplier_id)
        if old is None or when >= old[1]:
            newest[supplier.supplier_id] = (supplier, when)
    if not newest:
        return
    values = list(newest.values())
    await conn.execute(
        _UPSERT_SUPPLIERS,
        [s.supplier_id for s, _ in values],
        [s.name for s, _ in values],
        [s.store_name for s, _ in values],
        [s.plan_name for s, _ in values],
        [when for _, when in values],
    )


async def _write_warehouses(
    conn: asyncpg.Connection,
    accepted: list[tuple[ProductRecord, datetime]],
    rows: dict[int, _WarehouseRow],
) -> None:
    """`rows`: the warehouses as the batch found them (changed in place by the fold)."""
    changed = _fold_warehouses(rows, accepted)
    if not changed:
        return
    await conn.execute(
        _UPSERT_WAREHOUSES,
        list(changed),
        [r.name for r in changed.values()],
        [r.city for r in changed.values()],
        [r.first_seen for r in changed.values()],
        [r.last_seen for r in changed.values()],
    )


async def _write_images(
    conn: asyncpg.Connection, changes: list[tuple[int, str | None]], job_url: dict[int, str | None]
) -> int:
    """Set embedding work pending where a product's image moved away from its job's URL at
    any step of the batch (A, B, A again leaves it pending, as three batches would).
    `job_url`: each job's URL as the batch found it (changed in place)."""
    pending: dict[int, str | None] = {}
    for pid, url in changes:
        if pid not in job_url or job_url[pid] != url:
            job_url[pid] = pending[pid] = url
        elif pid in pending:
            pending[pid] = url
    if pending:
        await conn.execute(_PENDING_EMBEDDINGS, list(pending), list(pending.values()))
    return len(pending)


async def _write_categories(
    conn: asyncpg.Connection,
    records: list[ProductRecord],
    accepted: list[tuple[ProductRecord, datetime]],
    linked: dict[int, set[str]],
) -> None:
    """Every name any record gave is a category; each product links to its last record's.
    `linked`: each product's category names as the batch found them (left as it wrote them);
    only products whose names differ have their links rewritten (most repeats change stock,
    not categories)."""
    names = list(dict.fromkeys(name for r, _ in accepted for name in r.categories))
    ids: dict[str, int] = {}
    if names:
        await conn.execute(_INSERT_CATEGORIES, names)
        rows = await conn.fetch(
            "SELECT id, name FROM categories WHERE name = ANY($1::text[])", names
        )
        ids = {r["name"]: r["id"] for r in rows}
    changed = [r for r in records if set(r.categories) != linked.get(r.product_id, set())]
    stale = [r.product_id for r in changed if r.product_id in linked]
    if stale:
        await conn.execute(
            "DELETE FROM product_categories WHERE product_id = ANY($1::bigint[])", stale
        )
    links = {(r.product_id, ids[name]) for r in changed for name in r.categories}
    await _copy(conn, "product_categories", sorted(links), ("product_id", "category_id"))
    for r in changed:
        linked[r.product_id] = set(r.categories)


async def _write_variations(
    conn: asyncpg.Connection, accepted: list[tuple[ProductRecord, datetime]]
) -> None:
    """Every variation any record listed, with the values of the last record that listed it
    (one that disappears from a later record keeps its row, as with one line per batch)."""
    rows = {
        v.variation_id: (
            v.variation_id,
            r.product_id,
            v.sku,
            _text(v.sale_price),
            _text(v.suggested_price),
            v.attributes,
        )
        for r, _ in accepted
        for v in r.variations
    }
    if rows:
        await conn.copy_records_to_table("stage_variations", records=list(rows.values()))
        await conn.execute(_UPSERT_VARIATIONS)


def _text(price: Decimal | None) -> str | None:
    return None if price is None else str(price)
