"""Research filters: what a ranking may ask for, checked once for the CLI and HTTP.

Filters: `category` (a category name, case-insensitive), `city` (a warehouse city where the
product has stock now, case-insensitive), `min_margin` (percent; products without a suggested
price are left out), `at` (where the sales windows end; prices, stock, cities and groups are
always the current ones), `limit` and `offset` (one page of the ranking), `by` (the sort key).

`InvalidParameter` (dahell.errors) names a filter value that cannot be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dahell.errors import InvalidParameter

SORTS = ("sales", "margin", "suppliers", "new")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


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
