"""The Dropi record model: bytes of one input line in, normalised records or a rejection out.

Pure functions, no I/O, no asyncio, no database. See `dahell.reasons` for every rejection code.

Accepted shapes (FORMAT.md):
- a raw API product: `{"id": ..., "name": ..., "user": {...}, ...}`
- an API response: `{"objects": [PRODUCT, ...]}` or `{"data": {"objects": [...]}}` (one line, or
  a whole file parsed as one document), or a JSON array of products;
- a legacy line: flattened fields plus `raw_json` (the original product, which wins) and
  `capture_timestamp`; dahell's own journal lines have this shape too.

Here: the parse entry points (a line, a whole document, a line against known hashes) and how
a line's value becomes outcomes. The parts: `model` (the Structs), `text` (bytes to JSON
values), `fields` (validation of each field), `images` (the image URL), `records` (one product
to one record). Everything a caller may use is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dahell.dropi.fields import _captured_at
from dahell.dropi.images import image_url
from dahell.dropi.model import (
    Outcome,
    ProductRecord,
    Rejection,
    Seen,
    StockLevel,
    Supplier,
    Variation,
    Warehouse,
)
from dahell.dropi.records import _Context, _identity, _normalise
from dahell.dropi.text import _BOM, _clip, _loads, decode_line
from dahell.errors import RecordRejected

__all__ = [
    "CONTENT_ERRORS",
    "Outcome",
    "ProductRecord",
    "Rejection",
    "Seen",
    "StockLevel",
    "Supplier",
    "Variation",
    "Warehouse",
    "decode_line",
    "image_url",
    "parse_document",
    "parse_line",
    "parse_line_known",
]

_O = TypeVar("_O", bound="Outcome | Seen")


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
