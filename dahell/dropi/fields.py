"""Field validation and normalisation: each helper returns a clean value or raises
`RecordRejected` naming the field (the record turns it into a `Rejection`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

import ftfy
import orjson

from dahell.dropi.model import StockLevel, Supplier, Variation, Warehouse
from dahell.dropi.text import _clean_str, _clip
from dahell.errors import RecordRejected

_MAX_ID = 2**63
_MAX_STOCK = 2**62
_MAX_PRICE_INT = 10**12
_MAX_PRICE = Decimal(_MAX_PRICE_INT)
_CAPTURE_KEYS = ("capture_timestamp", "captured_at")


# ---------------------------------------------------------------------------------------------
# Field validation. Helpers raise RecordRejected; _record turns it into a Rejection.
# ---------------------------------------------------------------------------------------------


def _invalid(name: str, value: Any) -> RecordRejected:
    return RecordRejected(f"invalid_field:{name}", _clip(f"{name}={value!r}"))


def _parse_id(value: Any) -> int | None:
    """A positive bigint from an int or a digit string; None when it is not one."""
    if type(value) is int:  # the common case first (bool is a subclass: excluded by `is`)
        return value if 1 <= value < _MAX_ID else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()):
            return None
        value = int(value)
    if isinstance(value, int) and 1 <= value < _MAX_ID:
        return value
    return None


def _product_id(product: dict[str, Any]) -> int:
    value = product.get("id")
    if value is None:
        raise RecordRejected("missing_id", "the product has no id")
    parsed = _parse_id(value)
    if parsed is None:
        raise RecordRejected("invalid_id", _clip(f"id={value!r}"))
    return parsed


def _ref_id(value: Any, name: str) -> int:
    parsed = _parse_id(value)
    if parsed is None:
        raise _invalid(name, value)
    return parsed


def _number(value: Any) -> Decimal | None:
    """A finite Decimal from an int, float or numeric string; None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, str):
            number = Decimal(value.strip())
        else:
            return None
    except ArithmeticError:  # decimal.InvalidOperation
        return None
    return number if number.is_finite() else None


def _price(value: Any, name: str) -> Decimal | None:
    if type(value) is int and 0 <= value <= _MAX_PRICE_INT:
        return Decimal(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = _number(value)
    if number is None or number < 0 or number > _MAX_PRICE:
        raise _invalid(name, value)
    return number + 0 if number == 0 else number  # Decimal("-0") -> Decimal("0")


def _stock(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_STOCK:
        return value
    number = _number(value)
    if number is None or number < 0 or number > _MAX_STOCK or number != number.to_integral_value():
        raise _invalid(name, value)
    return int(number)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _fix_text(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _invalid(name, value)


def _fix_text(text: str) -> str:
    """Repair mojibake ("CamiÃ³n") where a marker is present.

    ftfy.fix_encoding costs ~0.1 ms, the marker check ~0.1 µs on a short field; fix_text is never
    used: it also rewrites quotes and other characters of genuine product text.
    """
    if "Ã" in text or "Â" in text or "â€" in text:
        return _clean_str(ftfy.fix_encoding(text))
    return text


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(name, value)
    return value


def _dict(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(name, value)
    return value


_T = TypeVar("_T")
_INTERN_MAX = 65_536
_interned: dict[tuple[Any, ...], Any] = {}


def _intern(cls: Callable[..., _T], *values: Any) -> _T:
    """Share equal immutable parts (suppliers, warehouses, stock levels, variations) across lines.

    The same product is seen again on every scrape pass, so most of these repeat; a frozen
    Struct costs ~0.5 µs to build and a dict hit ~0.1 µs. Bounded: cleared when full.
    """
    key = (cls, *values)
    found: _T | None = _interned.get(key)
    if found is None:
        if len(_interned) >= _INTERN_MAX:
            _interned.clear()
        found = _interned[key] = cls(*values)
    return found


@lru_cache(maxsize=1024)
def _parse_timestamp(value: str) -> datetime:
    """ISO 8601 -> aware UTC (naive means UTC). Cached: a file's lines share a few stamps."""
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _captured_at(line: dict[str, Any]) -> datetime | None:
    """The line's own capture time (ISO 8601, naive means UTC), as an aware UTC datetime."""
    for key in _CAPTURE_KEYS:
        value = line.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _invalid(key, value)
        try:
            return _parse_timestamp(value)
        except (ValueError, OverflowError):
            raise _invalid(key, value) from None
    return None


def _supplier(user: Any, name: str) -> Supplier | None:
    user = _dict(user, name)
    if user is None or user.get("id") is None:
        return None
    plan = _dict(user.get("plan"), f"{name}.plan")
    return _intern(
        Supplier,
        _ref_id(user["id"], f"{name}.id"),
        _text(user.get("name"), f"{name}.name"),
        _text(user.get("store_name"), f"{name}.store_name"),
        None if plan is None else _text(plan.get("name"), f"{name}.plan.name"),
    )


def _categories(value: Any) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for entry in _list(value, "categories"):
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and (name := name.strip()):
            names[_fix_text(name)] = None
    return tuple(names)


class _Stock:
    """Collects warehouses and stock rows of one product while its entries are validated."""

    __slots__ = ("labels", "product_rows", "variation_rows")

    def __init__(self) -> None:
        self.labels: dict[int, tuple[str | None, str | None]] = {}
        self.product_rows: dict[int, int] = {}
        self.variation_rows: dict[tuple[int, int], int] = {}

    def see_warehouse(self, warehouse_id: int, name: str | None, city: str | None) -> None:
        known = self.labels.get(warehouse_id)
        if known is not None:
            name, city = name or known[0], city or known[1]
        self.labels[warehouse_id] = (name, city)

    def warehouses(self) -> tuple[Warehouse, ...]:
        return tuple(_intern(Warehouse, w, *self.labels[w]) for w in sorted(self.labels))

    def entry(self, entry: Any, path: str) -> tuple[int, int | None]:
        """Validate one `{warehouse_id, stock, warehouse: {...}}`; returns (warehouse, stock)."""
        if not isinstance(entry, dict):
            raise _invalid(path, entry)
        info = entry.get("warehouse")
        info = info if isinstance(info, dict) else {}
        raw_id = entry.get("warehouse_id")
        warehouse_id = _ref_id(info.get("id") if raw_id is None else raw_id, f"{path}.warehouse_id")
        stock = _stock(entry.get("stock"), f"{path}.stock")
        city = info.get("city")
        city_name = city.get("name") if isinstance(city, dict) else city
        self.see_warehouse(warehouse_id, _label(info.get("name")), _label(city_name))
        return warehouse_id, stock

    def levels(self) -> tuple[StockLevel, ...]:
        """Variation rows plus per-warehouse sums as variation 0; else the product's rows."""
        rows: dict[tuple[int, int], int] = {}
        if self.variation_rows:
            totals: dict[int, int] = {}
            for (_, warehouse_id), qty in self.variation_rows.items():
                totals[warehouse_id] = totals.get(warehouse_id, 0) + qty
            for warehouse_id, total in totals.items():
                if total > _MAX_STOCK:
                    raise _invalid("variations.warehouse_product_variation.stock", total)
                rows[(0, warehouse_id)] = total
            rows.update(self.variation_rows)
        else:
            rows = {(0, w): qty for w, qty in self.product_rows.items()}
        return tuple(_intern(StockLevel, v, w, qty) for (v, w), qty in sorted(rows.items()))


def _label(value: Any) -> str | None:
    """Warehouse name or city: optional metadata, so a wrong type is dropped, not rejected."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _fix_text(value)


def _attributes(value: Any) -> str:
    values = value if isinstance(value, list) else []
    reduced = [
        {"attribute_name": item.get("attribute_name"), "value": item.get("value")}
        for item in values
        if isinstance(item, dict)
    ]
    return orjson.dumps(reduced).decode()


def _variations(value: Any, stock: _Stock) -> tuple[Variation, ...]:
    found: dict[int, Variation] = {}
    for entry in _list(value, "variations"):
        if not isinstance(entry, dict):
            raise _invalid("variations", entry)
        variation_id = _ref_id(entry.get("id"), "variations.id")
        _stock(entry.get("stock"), "variations.stock")  # validated; per-warehouse rows count
        path = "variations.warehouse_product_variation"
        for row in _list(entry.get("warehouse_product_variation"), path):
            warehouse_id, qty = stock.entry(row, path)
            if qty is not None:
                stock.variation_rows[(variation_id, warehouse_id)] = qty
        found[variation_id] = _intern(
            Variation,
            variation_id,
            _text(entry.get("sku"), "variations.sku"),
            _price(entry.get("sale_price"), "variations.sale_price"),
            _price(entry.get("suggested_price"), "variations.suggested_price"),
            _attributes(entry.get("attribute_values")),
        )
    return tuple(found.values())


def _product_stock(product: dict[str, Any], flat: bool, stock: _Stock) -> None:
    if flat and "warehouse_product" not in product and product.get("warehouse_id") is not None:
        # a legacy line without raw_json: only the first warehouse was kept, flattened
        warehouse_id = _ref_id(product["warehouse_id"], "warehouse_id")
        stock.see_warehouse(warehouse_id, None, None)
        qty = _stock(product.get("stock"), "stock")
        if qty is not None:
            stock.product_rows[warehouse_id] = qty
        return
    for row in _list(product.get("warehouse_product"), "warehouse_product"):
        warehouse_id, qty = stock.entry(row, "warehouse_product")
        if qty is not None:
            stock.product_rows[warehouse_id] = qty
