"""How the simulated catalog moves between passes.

Between passes the catalog moves as a real one does (`move_pass`, deterministic from the seed
and the pass number): every product has its own demand (most sell nothing on a given day, a few
sell dozens), stock falls by Poisson-distributed sales, low stock is restocked now and then,
prices move on a few products, and with `churn` some listings vanish while new ones (held in a
reserve built with the catalog, so their photos exist on the CDN) appear at the front.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from dahell.simulator.catalog import Product


@dataclass(frozen=True, slots=True)
class Demand:
    """How one product sells and is restocked: fixed per product, derived from the seed."""

    units_per_day: float  # mean units sold per day, over all its stock rows
    restock_below: int  # its stock rows at or under this...
    restock_chance: float  # ...are restocked, with this chance per pass...
    restock_units: int  # ...by this many units
    price_chance: float  # chance per pass that its price moves


@lru_cache(maxsize=1 << 17)
def demand(seed: int, product_id: int) -> Demand:
    """The product's demand: most sell nothing on a given day, a few sell dozens."""
    rng = random.Random(f"demand:{seed}:{product_id}")
    tier = rng.random()
    if tier < 0.82:
        rate = rng.uniform(0.0, 0.04)
    elif tier < 0.95:
        rate = rng.uniform(0.2, 1.5)
    else:
        rate = rng.uniform(3.0, 25.0)
    return Demand(
        units_per_day=rate,
        restock_below=rng.choice([0, 0, 2, 5, 10]),
        restock_chance=rng.choice([0.0, 0.0, 0.05, 0.1, 0.25]),
        restock_units=rng.choice([20, 50, 100, 200, 500]),
        price_chance=rng.choice([0.0, 0.0, 0.01, 0.02, 0.05]),
    )


def move_pass(
    products: list[Product],
    seed: int,
    pass_no: int,
    *,
    days: float = 1.0,
    churn: float = 0.0,
    reserve: list[Product] | None = None,
) -> list[Product]:
    """The catalog of pass `pass_no`, `days` after the previous pass.

    Each product sells by its own demand (Poisson, capped by its stock), some low stock is
    restocked, a few prices move; with `churn`, that share of the listings vanishes and about as
    many listings from `reserve` (not yet in `products`) appear at the front.
    """
    rng = random.Random(f"pass:{seed}:{pass_no}")
    out: list[Product] = []
    for product in products:
        if churn and rng.random() < churn:
            continue  # the supplier took the listing down
        out.append(_moved(rng, product, demand(seed, int(product["id"])), days))
    if churn and reserve:
        out[:0] = _arrivals(rng, products, reserve, round(churn * len(products)))
    return out


def _arrivals(
    rng: random.Random, products: list[Product], reserve: list[Product], wanted: int
) -> list[Product]:
    present = {p["id"] for p in products}
    waiting = [p for p in reserve if p["id"] not in present]
    return waiting[: max(0, wanted + rng.choice([-1, 0, 0, 1]))]


def _moved(rng: random.Random, product: Product, need: Demand, days: float) -> Product:
    """`product` after `days` of sales, restocks and price moves (a copy when it changed)."""
    rows = _stock_rows(product)
    per_row = need.units_per_day * days / max(1, len(rows))
    restock = rng.random() < need.restock_chance
    new_stock = [_next_stock(rng, int(row["stock"]), per_row, need, restock) for row in rows]
    price = _next_price(rng, product, need)
    if new_stock == [row["stock"] for row in rows] and price is None:
        return product
    moved: Product = orjson.loads(orjson.dumps(product))  # a deep copy, ten times faster
    for row, stock in zip(_stock_rows(moved), new_stock, strict=True):
        row["stock"] = stock
    for variation in moved.get("variations") or []:
        variation["stock"] = sum(r["stock"] for r in variation["warehouse_product_variation"])
    if price is not None:
        _set_price(moved, *price)
    return moved


def _next_stock(
    rng: random.Random, stock: int, mean_sold: float, need: Demand, restock: bool
) -> int:
    stock -= min(stock, _poisson(rng, mean_sold))
    if restock and stock <= need.restock_below:
        stock += need.restock_units
    return stock


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _next_price(rng: random.Random, product: Product, need: Demand) -> tuple[int, int] | None:
    """(new sale price, change of the suggested price) when the price moves this pass."""
    if rng.random() >= need.price_chance:
        return None
    sale = int(product["sale_price"])
    new = max(1000, round(sale * rng.choice([0.9, 0.95, 0.97, 1.03, 1.05, 1.1]) / 500) * 500)
    if new == sale:
        new = sale + 500
    return new, (new - sale if rng.random() < 0.5 else 0)


def _set_price(product: Product, sale: int, suggested_delta: int) -> None:
    product["sale_price"] = sale
    if "suggested_price" in product:
        product["suggested_price"] = int(product["suggested_price"]) + suggested_delta
    for variation in product.get("variations") or []:
        variation["sale_price"] = sale
        if variation.get("suggested_price") is not None:
            variation["suggested_price"] = int(variation["suggested_price"]) + suggested_delta


def _stock_rows(product: Product) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = list(product.get("warehouse_product") or [])
    for variation in product.get("variations") or []:
        rows.extend(variation["warehouse_product_variation"])
    return rows
