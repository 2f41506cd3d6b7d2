"""The Dropi record model: bytes of one input line in, normalised records or a rejection out.

Pure functions, no I/O, no asyncio, no database. See `dahell.reasons` for every rejection code.

Accepted shapes (FORMAT.md):
- a raw API product: `{"id": ..., "name": ..., "user": {...}, ...}`
- an API response: `{"objects": [PRODUCT, ...]}` or `{"data": {"objects": [...]}}` (one line, or
  a whole file parsed as one document), or a JSON array of products;
- a legacy line: flattened fields plus `raw_json` (the original product, which wins) and
  `capture_timestamp`; dahell's own journal lines have this shape too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Supplier:
    supplier_id: int
    name: str | None
    store_name: str | None
    plan_name: str | None


@dataclass(frozen=True, slots=True)
class Warehouse:
    warehouse_id: int
    name: str | None
    city: str | None


@dataclass(frozen=True, slots=True)
class Variation:
    variation_id: int
    sku: str | None
    sale_price: Decimal | None
    suggested_price: Decimal | None
    attributes: str  # JSON text: [{"attribute_name": ..., "value": ...}, ...]


@dataclass(frozen=True, slots=True)
class StockLevel:
    """Stock of one (variation, warehouse); variation_id 0 is the product's own stock."""

    variation_id: int
    warehouse_id: int
    stock_qty: int


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """One product, normalised. `raw_json` is the original API product as JSON text."""

    product_id: int
    sku: str | None
    title: str | None
    description: str | None
    product_type: str | None
    sale_price: Decimal | None
    suggested_price: Decimal | None
    image_url: str | None
    supplier: Supplier | None
    warehouses: tuple[Warehouse, ...]
    categories: tuple[str, ...]
    variations: tuple[Variation, ...]
    stock: tuple[StockLevel, ...]
    raw_json: str
    captured_at: datetime | None  # from the line itself; None: the caller supplies one
    content_hash: bytes = field(default=b"")


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


Outcome = ProductRecord | Rejection
