"""Request parameters, parsed by one small typed layer before any handler runs.

Every route is registered with `route(path, handler, **params)`: each parameter (path or query)
has a kind, and a value that does not fit it answers 400
`{"error": "invalid_parameter", "parameter", "detail"}` before the handler or the database see
it. The kinds are what PostgreSQL and Python accept, so that a client's mistake never becomes a
500 deep in a query:

- `identifier()`: ASCII digits only (`"²".isdigit()` is true), within bigint;
- `integer(lo, hi)`: an optional minus and ASCII digits, within [lo, hi] (itself within bigint);
- `number(lo, hi)`: a finite decimal number within [lo, hi];
- `text(max_chars)`: no NUL (PostgreSQL text cannot hold one), no U+FFFD (what aiohttp makes
  of an invalid UTF-8 percent escape) or lone surrogate, at most `max_chars` characters;
- `choice(*values)`;
- `timestamp()`: ISO 8601, naive means UTC, between `EARLIEST` and `LATEST` in UTC (the sales
  windows subtract days from it; PostgreSQL and Python both hold that range).

An empty or blank query value means "not given" (the default). Unknown query parameters are
ignored. `route` marks the handler with its parameters (`params_of`), so a test can run hostile
values over every parameter of every route the router holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from dahell.errors import InvalidParameter

__all__ = [
    "BIGINT_MAX",
    "Args",
    "Param",
    "choice",
    "identifier",
    "integer",
    "json_response",
    "number",
    "params_of",
    "route",
    "text",
    "timestamp",
]

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
#: Longer raw values are refused before any parsing (a number or a time is never this long).
MAX_RAW_CHARS = 1000
_DIGITS = re.compile(r"[0-9]{1,19}")
_SIGNED = re.compile(r"-?[0-9]{1,19}")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?")

Args = Mapping[str, Any]
RouteHandler = Callable[[web.Request, Args], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """One parameter: its kind (what the hostile-value test picks from), parser and default."""

    kind: str
    parse: Callable[[str], Any]
    default: Any = None
    #: A path value that does not fit answers 404 instead (a static file name).
    missing_is_404: bool = False
    #: The range of an integer or number.
    bounds: tuple[float, float] | None = None


def identifier() -> Param:
    """A database id: ASCII digits within bigint."""

    def parse(raw: str) -> int:
        if not _DIGITS.fullmatch(raw) or int(raw) > BIGINT_MAX:
            raise ValueError(f"{_show(raw)} is not an id (digits, at most {BIGINT_MAX})")
        return int(raw)

    return Param("identifier", parse)


def integer(lo: int, hi: int, default: int | None = None) -> Param:
    def parse(raw: str) -> int:
        if not _SIGNED.fullmatch(raw):
            raise ValueError(f"{_show(raw)} is not an integer")
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    assert BIGINT_MIN <= lo <= hi <= BIGINT_MAX
    return Param("integer", parse, default, bounds=(lo, hi))


def number(lo: float, hi: float, default: float | None = None) -> Param:
    def parse(raw: str) -> float:
        if not _DECIMAL.fullmatch(raw):
            raise ValueError(f"{_show(raw)} is not a number")
        value = float(raw)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"must be a number between {lo:g} and {hi:g}, got {_show(raw)}")
        return value

    return Param("number", parse, default, bounds=(lo, hi))


def text(max_chars: int, default: str | None = None) -> Param:
    def parse(raw: str) -> str:
        check_text(raw, max_chars)
        return raw

    return Param("text", parse, default)


def check_text(raw: str, max_chars: int) -> None:
    """ValueError unless PostgreSQL can store `raw` as text and it is at most `max_chars`."""
    if len(raw) > max_chars:
        raise ValueError(f"at most {max_chars} characters, got {len(raw)}")
    if "\x00" in raw:
        raise ValueError("must not contain a NUL character")
    if "\ufffd" in raw:  # what an invalid UTF-8 percent escape in a query decodes to
        raise ValueError("is not valid UTF-8 (an undecodable percent escape)")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 text") from None


def choice(*values: str, default: str | None = None) -> Param:
    def parse(raw: str) -> str:
        if raw not in values:
            raise ValueError(f"{_show(raw)} is not one of {', '.join(values)}")
        return raw

    return Param("choice", parse, default)


def timestamp() -> Param:
    def parse(raw: str) -> datetime:
        try:
            value = datetime.fromisoformat(raw)
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
            utc = value.astimezone(UTC)  # OverflowError near year 1 or 9999
        except (ValueError, OverflowError):
            raise ValueError(f"{_show(raw)} is not an ISO 8601 time") from None
        if not EARLIEST <= utc < LATEST:
            raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()} (UTC)")
        return value

    return Param("timestamp", parse)


def static_name(pattern: re.Pattern[str]) -> Param:
    """A file name matching `pattern`; anything else is 404 (no such file), not 400."""

    def parse(raw: str) -> str:
        if not pattern.fullmatch(raw):
            raise ValueError(f"{_show(raw)} is not a file of this server")
        return raw

    return Param("static_name", parse, missing_is_404=True)


def _show(raw: str) -> str:
    return repr(raw[:40] + ("…" if len(raw) > 40 else ""))


def parse_args(request: web.Request, params: Mapping[str, Param]) -> dict[str, Any]:
    """Every declared parameter, typed; `InvalidParameter` names the first that does not fit."""
    values: dict[str, Any] = {}
    for name, param in params.items():
        in_path = name in request.match_info
        raw = request.match_info[name] if in_path else request.query.get(name, "")
        raw = raw if in_path else raw.strip()
        if not in_path and raw == "":
            values[name] = param.default
            continue
        try:
            if len(raw) > MAX_RAW_CHARS:
                raise ValueError(f"at most {MAX_RAW_CHARS} characters, got {len(raw)}")
            values[name] = param.parse(raw)
        except ValueError as exc:
            if param.missing_is_404:
                raise web.HTTPNotFound() from None
            raise InvalidParameter(name, str(exc)) from None
    return values


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer; times, decimals and other non-JSON values as their text."""
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=str),
        status=status,
        content_type="application/json",
    )


def bad_parameter(exc: InvalidParameter) -> web.Response:
    body = {"error": "invalid_parameter", "parameter": exc.parameter, "detail": exc.detail}
    return json_response(body, 400)


def route(path: str, handler: RouteHandler, **params: Param) -> web.RouteDef:
    """A GET route whose handler receives its parameters parsed (a 400 names a bad one)."""

    async def parsed(request: web.Request) -> web.StreamResponse:
        try:
            args = parse_args(request, params)
        except InvalidParameter as exc:
            return bad_parameter(exc)
        return await handler(request, args)

    parsed.params = dict(params)  # type: ignore[attr-defined]
    parsed.__doc__ = handler.__doc__
    return web.get(path, parsed)


def params_of(handler: Any) -> dict[str, Param] | None:
    """The parameters a handler was registered with by `route` (None: registered otherwise)."""
    params = getattr(handler, "params", None)
    return dict(params) if isinstance(params, dict) else None
