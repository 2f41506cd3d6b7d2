"""The batch replayed in line order against the state before it, in Python (no I/O): what
each unit's outcome is and what rows the batch writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from dahell.catalog_store.state import PriceKey, Prices, StockKey, Unit, _Known, _WarehouseRow
from dahell.dropi import ProductRecord


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
