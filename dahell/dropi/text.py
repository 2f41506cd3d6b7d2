"""Bytes to JSON values: decoding, the cheap checks that keep the slow paths rare, cleaning."""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

import orjson

from dahell.dropi.model import Rejection

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

_DETAIL_MAX = 300


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
