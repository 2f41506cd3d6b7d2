"""One product object to one `ProductRecord`: its identity (id, capture time, content hash)
and its normalised fields.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import orjson

from dahell.dropi.fields import (
    _CAPTURE_KEYS,
    _captured_at,
    _categories,
    _invalid,
    _list,
    _price,
    _product_id,
    _product_stock,
    _Stock,
    _supplier,
    _text,
    _variations,
)
from dahell.dropi.images import _join_image, image_url
from dahell.dropi.model import ProductRecord, Rejection
from dahell.dropi.text import _clip, _loads
from dahell.errors import RecordRejected

# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


class _Context(msgspec.Struct, frozen=True):
    image_base_url: str
    captured_at: datetime | None = None  # a response's own capture time, for its products


def _raw_product(line: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The product a line describes, and whether it is flattened. raw_json wins when present."""
    raw = line.get("raw_json")
    if raw is None:
        product = {k: v for k, v in line.items() if k not in _CAPTURE_KEYS and k != "raw_json"}
        return product, True
    if isinstance(raw, str):  # raw_json stored as JSON text rather than an object
        parsed = _loads(raw.encode("utf-8"))
        if isinstance(parsed, Rejection):
            raise RecordRejected("invalid_field:raw_json", parsed.detail)
        raw = parsed
    if not isinstance(raw, dict):
        raise _invalid("raw_json", raw)
    return raw, False


class _Identity(NamedTuple):
    """What decides whether a line repeats a product already seen: its id and content."""

    product_id: int
    captured_at: datetime | None
    product: dict[str, Any]
    flat: bool
    raw_bytes: bytes
    content_hash: bytes


def _identity(line: dict[str, Any], ctx: _Context) -> _Identity:
    captured_at = _captured_at(line) or ctx.captured_at
    product, flat = _raw_product(line)
    product_id = _product_id(product)
    try:
        raw_bytes = orjson.dumps(product)
    except orjson.JSONEncodeError as exc:  # > 64-bit integers or > 255 levels, stdlib path only
        raise RecordRejected("invalid_json", _clip(f"cannot re-encode: {exc}")) from None
    digest = hashlib.blake2b(raw_bytes, digest_size=16).digest()
    return _Identity(product_id, captured_at, product, flat, raw_bytes, digest)


def _normalise(
    line: dict[str, Any], ctx: _Context, ident: _Identity | None = None
) -> ProductRecord:
    ident = ident or _identity(line, ctx)
    product, flat = ident.product, ident.flat
    user_key = "supplier" if flat and "user" not in product else "user"
    stock = _Stock()
    variations = _variations(product.get("variations"), stock)
    _product_stock(product, flat, stock)
    _list(product.get("gallery"), "gallery")
    image = image_url(product, ctx.image_base_url)
    if image is None and flat and "gallery" not in product:
        legacy_url = product.get("image_url")
        if isinstance(legacy_url, str) and legacy_url.strip():
            image = _join_image(legacy_url.strip(), ctx.image_base_url)
    return ProductRecord(
        product_id=ident.product_id,
        sku=_text(product.get("sku"), "sku"),
        title=_text(product.get("name"), "name"),
        description=_text(product.get("description"), "description"),
        product_type=_text(product.get("type"), "type"),
        sale_price=_price(product.get("sale_price"), "sale_price"),
        suggested_price=_price(product.get("suggested_price"), "suggested_price"),
        image_url=image,
        supplier=_supplier(product.get(user_key), user_key),
        warehouses=stock.warehouses(),
        categories=_categories(product.get("categories")),
        variations=variations,
        stock=stock.levels(),
        raw_json=ident.raw_bytes.decode(),
        captured_at=ident.captured_at,
        content_hash=ident.content_hash,
    )
