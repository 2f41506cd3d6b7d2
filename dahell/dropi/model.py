"""The record model's types: what a line becomes (records, rejections, sightings).

msgspec Structs: cheap to build, and they travel between the loader and its parse workers as
compact msgpack arrays (tagged by class name).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec


class _Part(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Immutable record parts. msgspec Structs are cheaper to build than dataclasses and travel
    between the loader and its parse workers as compact msgpack arrays."""


class Supplier(_Part, frozen=True):
    supplier_id: int
    name: str | None
    store_name: str | None
    plan_name: str | None


class Warehouse(_Part, frozen=True):
    warehouse_id: int
    name: str | None
    city: str | None


class Variation(_Part, frozen=True):
    variation_id: int
    sku: str | None
    sale_price: Decimal | None
    suggested_price: Decimal | None
    attributes: str  # JSON text: [{"attribute_name": ..., "value": ...}, ...]


class StockLevel(_Part, frozen=True):
    """Stock of one (variation, warehouse); variation_id 0 is the product's own stock."""

    variation_id: int
    warehouse_id: int
    stock_qty: int


class ProductRecord(_Part, frozen=True, tag=True):
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
    content_hash: bytes = b""


class Rejection(_Part, frozen=True, tag=True):
    reason: str
    detail: str


Outcome = ProductRecord | Rejection


class Seen(_Part, frozen=True, tag=True):
    """A line whose product has the content this parser last turned into a record for its id.

    Only `parse_line_known` gives it: its caller holds that record and needs only the new
    capture time, which saves the normalisation of the many unchanged repeats in real files.
    """

    product_id: int
    captured_at: datetime | None
    content_hash: bytes
