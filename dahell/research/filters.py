"""Research filters: what a ranking may ask for, parsed and checked once for the CLI and HTTP.

Filters: `category` (a category name, case-insensitive), `city` (a warehouse city where the
product has stock now, case-insensitive), `min_margin` (percent; products without a suggested
price are left out), `at` (where the sales windows end; prices, stock, cities and groups are
always the current ones), `limit` and `offset` (one page of the ranking), `by` (the sort key).

    InvalidParameter (a DahellError): a filter value that cannot be used; `parameter` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dahell.errors import DahellError

SORTS = ("sales", "margin", "suppliers", "new")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class InvalidParameter(DahellError):
    """A research filter value that cannot be used; `parameter` names the filter."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"invalid {parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


@dataclass(frozen=True)
class ResearchFilters:
    by: str = "sales"
    category: str | None = None
    city: str | None = None
    min_margin: float | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.by not in SORTS:
            raise InvalidParameter("by", f"{self.by!r} is not one of {', '.join(SORTS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidParameter("limit", f"must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.offset < 0:
            raise InvalidParameter("offset", f"must be 0 or more, got {self.offset}")
        if self.min_margin is not None and self.min_margin != self.min_margin:
            raise InvalidParameter("min_margin", "must be a number")
        if self.at is not None and self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=UTC))


# --- parsing (CLI and HTTP share it) -------------------------------------------------------


def parse_time(text: str, parameter: str = "at") -> datetime:
    """ISO 8601 (`2026-11-30`, `2026-11-30T18:00`, `...Z`, `...-05:00`); naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidParameter(parameter, f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_filters(query: Mapping[str, str]) -> ResearchFilters:
    """Filters from strings (an HTTP query); `InvalidParameter` names the first bad one."""
    values: dict[str, Any] = {}
    if query.get("by"):
        values["by"] = query["by"].strip()
    for name in ("category", "city"):
        text = (query.get(name) or "").strip()
        if text:
            values[name] = text
    if (text := (query.get("min_margin") or "").strip()) != "":
        values["min_margin"] = _number(text, "min_margin")
    for name in ("limit", "offset"):
        if (text := (query.get(name) or "").strip()) != "":
            values[name] = _integer(text, name)
    if (text := (query.get("at") or "").strip()) != "":
        values["at"] = parse_time(text)
    return ResearchFilters(**values)


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(name, f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidParameter(name, f"{text!r} is not a finite number")
    return value


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidParameter(name, f"{text!r} is not an integer") from None
