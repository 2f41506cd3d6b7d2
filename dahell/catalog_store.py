"""Writes normalised product records into the catalog tables, one batch per call.

The batch is applied as if its records arrived one at a time in line order, whatever the batch
boundaries: a record older than what the database (or an earlier line) already holds changes
nothing; a record whose content hash equals the current one only moves `last_seen_at`; stock and
price history get a row only where a value is first seen or differs from the previous one. So
loading the same lines in one batch or in ten gives the same rows (what makes a replay after a
crash indistinguishable from a clean run). That holds for the shared rows too: a supplier keeps
the values of its newest capture (`suppliers.captured_at`), a warehouse the name and city of its
newest sighting (`last_seen_at`), whichever product brought them; and the rows every record of
the batch touched (variations, category names, embedding work) are written as each record, not
only the last one per product, would have written them.

Writes: COPY into temporary staging tables, then one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
per table; stock history rows are COPYed straight into their tables. Prices travel as text and
are cast by PostgreSQL: asyncpg's binary `numeric` encoder costs ~2 µs a value, about a quarter
of the loader's own CPU time before this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from dahell.dropi import ProductRecord, Seen, Supplier

OUTCOMES = ("inserted", "updated", "unchanged")

#: The session's staging tables (created once per connection; emptied at each commit).
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_products (
    product_id bigint, supplier_id bigint, sku text, title text, description text,
    sale_price text, suggested_price text, product_type text, url_image_s3 text,
    last_seen_at timestamptz, raw_data jsonb, captured_at timestamptz, content_hash bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_variations (
    variation_id bigint, product_id bigint, sku text, sale_price text,
    suggested_price text, attributes jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_prices (
    product_id bigint, variation_id bigint, sale_price text, suggested_price text,
    captured_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_stock (
    product_id bigint, variation_id bigint, warehouse_id bigint, stock_qty bigint,
    snapshot_at timestamptz
) ON COMMIT DELETE ROWS;
"""

_CLEAR_STAGING = "TRUNCATE stage_products, stage_variations, stage_stock, stage_prices"

_PRODUCT_COLUMNS = (
    "product_id",
    "supplier_id",
    "sku",
    "title",
    "description",
    "sale_price",
    "suggested_price",
    "product_type",
    "url_image_s3",
    "last_seen_at",
    "raw_data",
    "captured_at",
    "content_hash",
)

_UPSERT_PRODUCTS = """
INSERT INTO products AS p (product_id, supplier_id, sku, title, description, sale_price,
    suggested_price, product_type, url_image_s3, last_seen_at, raw_data, captured_at, content_hash)
SELECT product_id, supplier_id, sku, title, description, sale_price::numeric,
    suggested_price::numeric, product_type, url_image_s3, last_seen_at, raw_data, captured_at,
    content_hash
FROM stage_products
ON CONFLICT (product_id) DO UPDATE SET
    supplier_id = excluded.supplier_id, sku = excluded.sku, title = excluded.title,
    description = excluded.description, sale_price = excluded.sale_price,
    suggested_price = excluded.suggested_price, product_type = excluded.product_type,
    url_image_s3 = excluded.url_image_s3, raw_data = excluded.raw_data,
    captured_at = excluded.captured_at, content_hash = excluded.content_hash,
    last_seen_at = GREATEST(p.last_seen_at, excluded.last_seen_at),
    is_active = true, updated_at = now()
WHERE p.captured_at <= excluded.captured_at
  AND (p.content_hash IS DISTINCT FROM excluded.content_hash
       OR p.captured_at < excluded.captured_at)
"""

# Everything a batch starts from, in one round trip: one row shape for all (kind, ids, stock,
# hash, two times, two texts, two prices), `kind` indexing `_READERS`. A product's own stock
# and price rows exist only if the product does: asking for new products too costs an index
# probe each, less than a round trip.
_READ_STATE = """
SELECT 0, product_id, NULL::bigint, NULL::bigint, NULL::bigint, content_hash, last_seen_at,
    captured_at, url_image_s3, NULL::text, sale_price, suggested_price
FROM products WHERE product_id = ANY($1::bigint[])
UNION ALL
SELECT 1, product_id, variation_id, warehouse_id, stock_qty, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL
FROM product_stock WHERE product_id = ANY($1::bigint[])
UNION ALL
SELECT 2, product_id, variation_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, sale_price,
    suggested_price
FROM product_variations WHERE product_id = ANY($1::bigint[])
UNION ALL
SELECT 3, pc.product_id, NULL, NULL, NULL, NULL, NULL, NULL, c.name, NULL, NULL, NULL
FROM product_categories AS pc JOIN categories AS c ON c.id = pc.category_id
WHERE pc.product_id = ANY($1::bigint[])
UNION ALL
SELECT 4, product_id, NULL, NULL, NULL, NULL, NULL, NULL, image_url, NULL, NULL, NULL
FROM embedding_jobs WHERE product_id = ANY($1::bigint[])
UNION ALL
SELECT 5, warehouse_id, NULL, NULL, NULL, NULL, first_seen_at, last_seen_at, name, city, NULL,
    NULL
FROM warehouses WHERE warehouse_id = ANY($2::bigint[])
"""

_TOUCH_PRODUCTS = """
UPDATE products AS p SET last_seen_at = v.seen
FROM unnest($1::bigint[], $2::timestamptz[]) AS v(product_id, seen)
WHERE p.product_id = v.product_id AND p.last_seen_at < v.seen
"""

# A supplier's values are those of its newest capture (ties: the later line): an older line
# changes nothing, whichever product it comes with.
_UPSERT_SUPPLIERS = """
INSERT INTO suppliers AS s (supplier_id, name, store_name, plan_name, captured_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT (supplier_id) DO UPDATE SET
    name = excluded.name, store_name = excluded.store_name, plan_name = excluded.plan_name,
    captured_at = excluded.captured_at,
    updated_at = CASE WHEN (s.name, s.store_name, s.plan_name)
        IS DISTINCT FROM (excluded.name, excluded.store_name, excluded.plan_name)
        THEN now() ELSE s.updated_at END
WHERE (s.captured_at IS NULL OR s.captured_at <= excluded.captured_at)
  AND ((s.name, s.store_name, s.plan_name, s.captured_at)
    IS DISTINCT FROM (excluded.name, excluded.store_name, excluded.plan_name, excluded.captured_at))
"""

# The values come from `_fold_warehouses`, which started from the rows read in this
# transaction (under the loader's lock): they replace the row as they are.
_UPSERT_WAREHOUSES = """
INSERT INTO warehouses AS w (warehouse_id, name, city, first_seen_at, last_seen_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[])
ON CONFLICT (warehouse_id) DO UPDATE SET
    name = excluded.name, city = excluded.city, first_seen_at = excluded.first_seen_at,
    last_seen_at = excluded.last_seen_at
WHERE (w.name, w.city, w.first_seen_at, w.last_seen_at)
    IS DISTINCT FROM (excluded.name, excluded.city, excluded.first_seen_at, excluded.last_seen_at)
"""

# New names only, in the order the lines first gave them: a category's id then depends on
# neither the batch boundaries nor names already known (a conflict would still use an id).
_INSERT_CATEGORIES = """
INSERT INTO categories (name)
SELECT v.name FROM unnest($1::text[]) WITH ORDINALITY AS v(name, n)
WHERE NOT EXISTS (SELECT 1 FROM categories c WHERE c.name = v.name)
ORDER BY v.n
ON CONFLICT (name) DO NOTHING
"""

_UPSERT_VARIATIONS = """
INSERT INTO product_variations AS v (variation_id, product_id, sku, sale_price,
    suggested_price, attributes)
SELECT variation_id, product_id, sku, sale_price::numeric, suggested_price::numeric, attributes
FROM stage_variations
ON CONFLICT (variation_id) DO UPDATE SET
    product_id = excluded.product_id, sku = excluded.sku, sale_price = excluded.sale_price,
    suggested_price = excluded.suggested_price, attributes = excluded.attributes,
    updated_at = now()
WHERE (v.product_id, v.sku, v.sale_price, v.suggested_price, v.attributes)
    IS DISTINCT FROM (excluded.product_id, excluded.sku, excluded.sale_price,
                      excluded.suggested_price, excluded.attributes)
"""

_UPSERT_STOCK = """
INSERT INTO product_stock AS s (product_id, variation_id, warehouse_id, stock_qty, snapshot_at)
SELECT product_id, variation_id, warehouse_id, stock_qty, snapshot_at FROM stage_stock
ON CONFLICT (product_id, variation_id, warehouse_id) DO UPDATE SET
    stock_qty = excluded.stock_qty, snapshot_at = excluded.snapshot_at
WHERE s.snapshot_at <= excluded.snapshot_at
"""

_INSERT_PRICES = """
INSERT INTO price_history (product_id, variation_id, sale_price, suggested_price, captured_at)
SELECT product_id, variation_id, sale_price::numeric, suggested_price::numeric, captured_at
FROM stage_prices
"""

# Only for products whose job `_fold_images` found with another URL at some point in the batch.
_PENDING_EMBEDDINGS = """
INSERT INTO embedding_jobs AS j (product_id, image_url, state)
SELECT id, url, 'pending' FROM unnest($1::bigint[], $2::text[]) AS v(id, url)
ON CONFLICT (product_id) DO UPDATE SET
    image_url = excluded.image_url, state = 'pending', attempts = 0, reason = NULL,
    detail = NULL, next_attempt_at = now(), lease_until = NULL, claimed_by = NULL,
    updated_at = now()
"""


@dataclass(slots=True)
class Unit:
    """One record on its way in and when it was captured.

    A `Seen` stands for a record whose content hash the parser already met: when the database
    (or an earlier unit) holds that content, it only moves `last_seen_at`; otherwise `expand`
    gives the full record.
    """

    record: ProductRecord | Seen
    captured_at: datetime
    expand: Callable[[], ProductRecord] | None = None


@dataclass
class BatchOutcome:
    outcomes: list[str]  # one per unit, in order: inserted / updated / unchanged
    pending_embeddings: int = 0
    history_rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Known:
    content_hash: bytes
    last_seen: datetime
    captured_at: datetime
    image_url: str | None


@dataclass
class _Plan:
    """What the batch writes, decided in Python from the database's state before it."""

    outcomes: list[str] = field(default_factory=list)
    products: dict[int, tuple[ProductRecord, datetime, datetime]] = field(default_factory=dict)
    touched: dict[int, datetime] = field(default_factory=dict)
    stock_log: list[tuple[int, int, int, datetime]] = field(default_factory=list)
    variation_stock_log: list[tuple[int, int, int, int, datetime]] = field(default_factory=list)
    price_log: list[tuple[int, int, Decimal | None, Decimal | None, datetime]] = field(
        default_factory=list
    )
    stock_now: dict[tuple[int, int, int], tuple[int, datetime]] = field(default_factory=dict)
    #: Every record written, in line order: shared rows (suppliers, warehouses, categories,
    #: variations) take what each one said, as if the lines had come one at a time.
    accepted: list[tuple[ProductRecord, datetime]] = field(default_factory=list)
    #: (product, image URL) each time a product's image differs from its previous one.
    image_changes: list[tuple[int, str | None]] = field(default_factory=list)


async def apply_batch(
    conn: asyncpg.Connection, units: list[Unit], *, clear_staging: bool = True
) -> BatchOutcome:
    """Apply `units` inside the caller's transaction; return each unit's outcome.

    `clear_staging=False` only where the staging tables are known to be empty (the first
    application in a transaction: ON COMMIT DELETE ROWS emptied them).
    """
    if not units:
        return BatchOutcome([])
    # ON COMMIT DELETE ROWS empties the staging tables at commit only: a batch split to isolate
    # a refused row applies several parts in one transaction, and must not see the rows of a
    # part before it (they would be written again, over newer values).
    if clear_staging:
        await conn.execute(_CLEAR_STAGING)
    before = await _read_state(conn, units)
    plan = _plan(units, before.known, before.stock, before.prices)
    pending = await _write(conn, plan, before)
    return BatchOutcome(
        plan.outcomes,
        pending_embeddings=pending,
        history_rows=len(plan.stock_log) + len(plan.variation_stock_log) + len(plan.price_log),
    )


PriceKey = tuple[int, int]
StockKey = tuple[int, int, int]
Prices = tuple[Decimal | None, Decimal | None]


@dataclass
class _State:
    """What the database holds for a batch's products and warehouses before it is applied."""

    known: dict[int, _Known] = field(default_factory=dict)
    stock: dict[StockKey, int] = field(default_factory=dict)
    prices: dict[PriceKey, Prices] = field(default_factory=dict)
    categories: dict[int, set[str]] = field(default_factory=dict)
    job_urls: dict[int, str | None] = field(default_factory=dict)
    warehouses: dict[int, _WarehouseRow] = field(default_factory=dict)


async def _read_state(conn: asyncpg.Connection, units: list[Unit]) -> _State:
    """One round trip for every row the plan and the writes start from (`_READ_STATE`)."""
    ids = sorted({u.record.product_id for u in units})
    warehouse_ids = sorted(
        {wh.warehouse_id for u in units if isinstance(u.record, ProductRecord)
         for wh in u.record.warehouses}
    )  # fmt: skip
    state = _State()
    for r in await conn.fetch(_READ_STATE, ids, warehouse_ids):
        _READERS[r[0]](state, r)
    return state


def _read_product(state: _State, r: asyncpg.Record) -> None:
    state.known[r[1]] = _Known(bytes(r[5]), r[6], r[7], r[8])
    state.prices[(r[1], 0)] = (r[10], r[11])


def _read_stock(state: _State, r: asyncpg.Record) -> None:
    state.stock[(r[1], r[2], r[3])] = r[4]


def _read_variation(state: _State, r: asyncpg.Record) -> None:
    state.prices[(r[1], r[2])] = (r[10], r[11])


def _read_category(state: _State, r: asyncpg.Record) -> None:
    state.categories.setdefault(r[1], set()).add(r[8])


def _read_job(state: _State, r: asyncpg.Record) -> None:
    state.job_urls[r[1]] = r[8]


def _read_warehouse(state: _State, r: asyncpg.Record) -> None:
    state.warehouses[r[1]] = _WarehouseRow(r[8], r[9], r[6], r[7])


_READERS = (
    _read_product,
    _read_stock,
    _read_variation,
    _read_category,
    _read_job,
    _read_warehouse,
)


def _plan(
    units: list[Unit],
    known: dict[int, _Known],
    prev_stock: dict[StockKey, int],
    prev_prices: dict[PriceKey, Prices],
) -> _Plan:
    """Replay the batch in line order against what the database holds."""
    plan = _Plan()
    for unit in units:
        seen, when = unit.record, unit.captured_at
        state = known.get(seen.product_id)
        if state is not None and when < state.last_seen:
            plan.outcomes.append("unchanged")  # an older capture never overwrites a newer one
            continue
        if state is not None and state.content_hash == seen.content_hash:
            plan.outcomes.append("unchanged")
            state.last_seen = when
            if seen.product_id not in plan.products:
                plan.touched[seen.product_id] = when
            else:
                record, captured, _ = plan.products[seen.product_id]
                plan.products[seen.product_id] = (record, captured, when)
            continue
        rec = _full(unit)
        plan.outcomes.append("inserted" if state is None else "updated")
        if state is None or state.image_url != rec.image_url:
            plan.image_changes.append((rec.product_id, rec.image_url))
        known[rec.product_id] = _Known(rec.content_hash, when, when, rec.image_url)
        plan.products[rec.product_id] = (rec, when, when)
        plan.accepted.append((rec, when))
        plan.touched.pop(rec.product_id, None)
        _plan_history(plan, rec, when, prev_stock, prev_prices)
    return plan


def _full(unit: Unit) -> ProductRecord:
    if isinstance(unit.record, ProductRecord):
        return unit.record
    if unit.expand is None:
        raise ValueError(f"a Seen for product {unit.record.product_id} without a way to expand it")
    return unit.expand()


def _plan_history(
    plan: _Plan,
    rec: ProductRecord,
    when: datetime,
    prev_stock: dict[StockKey, int],
    prev_prices: dict[PriceKey, Prices],
) -> None:
    """A history row for each stock or price first seen or different from the one before it.
    (One loop each, without a call per value: this runs for every stock level and price of
    every record written, the loader's hottest Python.)"""
    pid = rec.product_id
    stock_now = plan.stock_now
    for level in rec.stock:
        qty, variation, warehouse = level.stock_qty, level.variation_id, level.warehouse_id
        key = (pid, variation, warehouse)
        stock_now[key] = (qty, when)
        if prev_stock.get(key) == qty:
            continue
        prev_stock[key] = qty
        if variation == 0:
            plan.stock_log.append((pid, warehouse, qty, when))
        else:
            plan.variation_stock_log.append((pid, variation, warehouse, qty, when))
    prices: list[tuple[PriceKey, Prices]] = [((pid, 0), (rec.sale_price, rec.suggested_price))]
    prices += [((pid, v.variation_id), (v.sale_price, v.suggested_price)) for v in rec.variations]
    for price_key, values in prices:
        if values == (None, None) or prev_prices.get(price_key) == values:
            continue
        prev_prices[price_key] = values
        plan.price_log.append((pid, price_key[1], values[0], values[1], when))


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


@dataclass(slots=True)
class _WarehouseRow:
    name: str | None
    city: str | None
    first_seen: datetime
    last_seen: datetime


def _fold_warehouses(
    rows: dict[int, _WarehouseRow], accepted: list[tuple[ProductRecord, datetime]]
) -> dict[int, _WarehouseRow]:
    """Apply each sighting in line order, as one-line batches would: the seen window widens;
    a sighting at least as new as the newest before it sets the name and city it gives (a
    missing one keeps the value held). Returns the rows that changed."""
    changed: dict[int, _WarehouseRow] = {}
    for rec, when in accepted:
        for wh in rec.warehouses:
            row = rows.get(wh.warehouse_id)
            if row is None:
                row = rows[wh.warehouse_id] = _WarehouseRow(wh.name, wh.city, when, when)
            elif when >= row.last_seen:
                row.name, row.city = wh.name or row.name, wh.city or row.city
                row.last_seen = when
            row.first_seen = min(row.first_seen, when)
            changed[wh.warehouse_id] = row
    return changed


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
    conn: asyncpg.Connection,
    changes: list[tuple[int, str | None]],
    job_url: dict[int, str | None],
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
    `linked`: each product's category names as the batch found them; only products whose
    names differ have their links rewritten (most repeats change stock, not categories)."""
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


def count_outcomes(outcomes: list[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        counts[outcome] += 1
    return dict(counts)
