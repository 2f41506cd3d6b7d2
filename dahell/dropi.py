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

import codecs
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import ftfy
import msgspec
import orjson

from dahell.errors import RecordRejected


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


# ---------------------------------------------------------------------------------------------
# Decoding: strict UTF-8, with only the invalid bytes re-read as cp1252 (latin-1 where cp1252
# leaves a byte undefined), so that one Latin-1 word does not garble valid UTF-8 on the same line.
# ---------------------------------------------------------------------------------------------

_CP1252_ERRORS = "dahell-cp1252"


def _cp1252_char(byte: int) -> str:
    try:
        return bytes((byte,)).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252, read as latin-1


_CP1252_TABLE: tuple[str, ...] = tuple(_cp1252_char(b) for b in range(256))


def _cp1252_handler(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(_CP1252_TABLE[b] for b in bad), exc.end


codecs.register_error(_CP1252_ERRORS, _cp1252_handler)


def decode_line(data: bytes) -> str:
    """Strict UTF-8; only the bytes that are not valid UTF-8 are read as cp1252."""
    return data.decode("utf-8", _CP1252_ERRORS)


# ---------------------------------------------------------------------------------------------
# Cheap byte-level checks that decide whether the slow paths (cleaning walk, ftfy) run at all.
# ---------------------------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
#: `\u0000` or any surrogate escape: the only ways a NUL or a surrogate gets into parsed strings.
_UNSAFE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")

_MAX_ID = 2**63
_MAX_STOCK = 2**62
_MAX_PRICE_INT = 10**12
_MAX_PRICE = Decimal(_MAX_PRICE_INT)
_DETAIL_MAX = 300
_CAPTURE_KEYS = ("capture_timestamp", "captured_at")


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


def _clean_str(text: str) -> str:
    """Drop NUL and replace lone surrogates: PostgreSQL stores neither in text or jsonb."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return _SURROGATES.sub("\ufffd", text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, dict):
        return {_clean_str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _loads_slow(data: bytes) -> Any | Rejection:
    """orjson refused the bytes: retry after cp1252 repair and/or with the stdlib parser.

    The stdlib parser is used only where it can do better than orjson: lone surrogate escapes
    (orjson refuses them, PostgreSQL too, so they are parsed and then cleaned) and the NaN /
    Infinity literals Python's json module writes (parsed, so the field gets its own reason).
    """
    text = decode_line(data)
    error: Exception | None = None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        error = exc
    if _SURROGATE_ESCAPE.search(data) or b"NaN" in data or b"Infinity" in data:
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            error = exc
    return Rejection("invalid_json", _clip(str(error)))


def _loads(data: bytes) -> Any | Rejection:
    """Parse one JSON text; strings in the result are safe for PostgreSQL.

    The walk that cleans strings runs only when the bytes hold an escape that can produce NUL
    or a surrogate, or when orjson refused them (`in` with one byte is a memchr, the regex runs
    only on lines with a backslash).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = _loads_slow(data)
        return value if isinstance(value, Rejection) else _clean(value)
    if b"\\" in data and _UNSAFE_ESCAPE.search(data) is not None:
        return _clean(value)
    return value


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
_O = TypeVar("_O", bound="Outcome | Seen")
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


# ---------------------------------------------------------------------------------------------
# Image URL
# ---------------------------------------------------------------------------------------------

#: Characters kept as they are when a full URL is quoted: the reserved set and "%".
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


#: A path made only of these needs no quoting (most real paths): skips quote()'s cost.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.\-~/]*")


def _join_image(path: str, base: str) -> str:
    if path.startswith(("http://", "https://")):
        return quote(path, safe=_URL_SAFE, errors="replace")
    path = path.lstrip("/")
    if not _PLAIN_PATH.fullmatch(path):
        path = quote(path, safe="/", errors="replace")
    return base.rstrip("/") + "/" + path


def _gallery_path(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    for key in ("urlS3", "url"):
        path = entry.get(key)
        if isinstance(path, str) and path.strip():
            return path.strip()
    return None


def image_url(product: dict[str, Any], base: str) -> str | None:
    """The product's cover image: base + gallery path (urlS3, else url), `main` entry first."""
    gallery = product.get("gallery")
    if not isinstance(gallery, list):
        return None
    first: str | None = None
    for entry in gallery:
        path = _gallery_path(entry)
        if path is None:
            continue
        if entry.get("main") is True:
            return _join_image(path, base)
        if first is None:
            first = path
    return None if first is None else _join_image(first, base)


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


def _record(value: Any, ctx: _Context) -> Outcome:
    if not isinstance(value, dict):
        return Rejection("not_an_object", f"a JSON {_json_type(value)}, not an object")
    try:
        return _normalise(value, ctx)
    except RecordRejected as exc:
        return Rejection(exc.reason, exc.detail)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}.get(
        type(value), "object"
    )


def _response(value: dict[str, Any], ctx: _Context) -> list[Outcome] | None:
    """Outcomes of an API response, one per product; None when `value` is not a response."""
    data: Any = value.get("data")
    nested = isinstance(data, dict) and "objects" in data
    if "objects" not in value and not nested and "isSuccess" not in value:
        return None
    if value.get("isSuccess") is False:
        message = value.get("message", value.get("error", ""))
        return [Rejection("api_error", _clip(str(message)))]
    objects = value["objects"] if "objects" in value else data["objects"] if nested else None
    if objects is None or objects == []:
        return [Rejection("empty_response", "the response holds no products")]
    if not isinstance(objects, list):
        return [Rejection("invalid_field:objects", _clip(f"objects={objects!r}"))]
    try:
        inner = _Context(ctx.image_base_url, _captured_at(value))
    except RecordRejected as exc:
        return [Rejection(exc.reason, exc.detail)]
    return [_record(item, inner) for item in objects]


def _outcomes(value: Any, image_base_url: str) -> list[Outcome]:
    ctx = _Context(image_base_url)
    if isinstance(value, list):
        if not value:
            return [Rejection("empty_response", "an empty JSON array")]
        return [_record(item, ctx) for item in value]
    if isinstance(value, dict):
        response = _response(value, ctx)
        if response is not None:
            return response
    return [_record(value, ctx)]


#: What a line's own content can make the record model raise when the model has a bug: the
#: errors of a value (of a wrong type, out of range, badly encoded, missing a key).
CONTENT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # UnicodeError, JSON and msgspec decode errors among them
    TypeError,
    LookupError,  # KeyError, IndexError
    AttributeError,
    ArithmeticError,  # OverflowError, ZeroDivisionError, decimal.InvalidOperation
    AssertionError,
)


def _guarded(parse: Callable[[], list[_O]]) -> list[_O | Rejection]:
    """Only a line's own content may reject the line.

    A rejection names what is wrong with the line (`RecordRejected`, caught where it is
    raised). A bug of the record model met on this line's content (one of `CONTENT_ERRORS`)
    rejects this line alone as `internal_error`, with the raw text kept for a fix and a reload.
    Anything else says nothing about the line: `MemoryError`, `OSError`, `RuntimeError`,
    `ImportError`, `SystemError`, and every `BaseException` (cancellation, interrupts) are
    raised, so the caller's batch stops uncommitted and is tried again, the line included.
    """
    try:
        return list(parse())
    except RecursionError:
        return [Rejection("invalid_json", "nested too deeply")]
    except CONTENT_ERRORS as exc:
        return [Rejection("internal_error", _clip(f"{type(exc).__name__}: {exc}"))]


def _parse_line(data: bytes, image_base_url: str, max_line_bytes: int) -> list[Outcome]:
    if len(data) > max_line_bytes:
        return [Rejection("line_too_long", f"{len(data)} bytes > {max_line_bytes}")]
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        return [Rejection("blank_line", "")]
    parsed = _loads(data)
    if isinstance(parsed, Rejection):
        return [parsed]
    return _outcomes(parsed, image_base_url)


def parse_line(data: bytes, *, image_base_url: str, max_line_bytes: int) -> list[Outcome]:
    """One input line (no newline) -> its outcomes: one per product of a response, else one.

    Never raises, whatever the bytes.
    """
    return _guarded(lambda: _parse_line(data, image_base_url, max_line_bytes))


def parse_line_known(
    data: bytes, *, image_base_url: str, max_line_bytes: int, last_hashes: dict[int, bytes]
) -> list[Outcome | Seen]:
    """`parse_line`, except that a one-product line whose content hash equals
    `last_hashes[product_id]` gives a `Seen`; each record produced updates `last_hashes`.

    Never raises, whatever the bytes.
    """
    return _guarded(lambda: _parse_line_known(data, image_base_url, max_line_bytes, last_hashes))


def _parse_line_known(
    data: bytes, image_base_url: str, max_line_bytes: int, last_hashes: dict[int, bytes]
) -> list[Outcome | Seen]:
    if len(data) > max_line_bytes or b"objects" in data:  # a response: the general path
        return list(_parse_line(data, image_base_url, max_line_bytes))
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        return [Rejection("blank_line", "")]
    parsed = _loads(data)
    if isinstance(parsed, Rejection):
        return [parsed]
    if not isinstance(parsed, dict) or "isSuccess" in parsed or "data" in parsed:
        return list(_outcomes(parsed, image_base_url))
    ctx = _Context(image_base_url)
    try:
        ident = _identity(parsed, ctx)
        if last_hashes.get(ident.product_id) == ident.content_hash:
            return [Seen(ident.product_id, ident.captured_at, ident.content_hash)]
        record = _normalise(parsed, ctx, ident)
    except RecordRejected as exc:
        return [Rejection(exc.reason, exc.detail)]
    last_hashes[ident.product_id] = ident.content_hash
    return [record]


def parse_document(data: bytes, *, image_base_url: str) -> list[Outcome] | None:
    """A whole file that is one JSON document -> its outcomes; None when it is not one.

    None tells the caller to read the file line by line instead.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        return None
    try:
        parsed = _loads(data)
    except RecursionError:
        return None
    if isinstance(parsed, Rejection):
        return None
    return _guarded(lambda: _outcomes(parsed, image_base_url))
