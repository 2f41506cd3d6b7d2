"""Counts and reports: what happened to each line, product and file of a load."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dahell.stages.loader.chunks import _Item

LOADED = ("inserted", "updated", "unchanged")
#: The line and product counts of a load, in the order a summary shows them.
SUMMARY_COUNTS = ("lines", "loaded", "rejected", "products", *LOADED, "products_rejected")


@dataclass
class LoadStats:
    """Counts by outcome, for lines and for the products they held.

    Each physical line (an unterminated last line included) ends once: `loaded` when at least
    one of its products loaded, else `rejected`; so `loaded + rejected == lines`. Each product
    ends `inserted`, `updated`, `unchanged` or rejected (`products_rejected`, with its reason in
    `rejected_by_reason` and in the `rejects` table); so `inserted + updated + unchanged +
    products_rejected == products`. A line that holds no product it could read (invalid JSON,
    a blank line, an API error) counts as one rejected product. A line holding a whole API
    response is one line and many products.
    """

    lines: int = 0
    loaded: int = 0
    rejected: int = 0
    products: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    products_rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    history_rows: int = 0
    pending_embeddings: int = 0

    COUNTS = (*SUMMARY_COUNTS, "history_rows", "pending_embeddings")

    @property
    def products_loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def add(self, other: LoadStats) -> None:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected_by_reason.update(other.rejected_by_reason)

    def count_product(self, outcome: str, reason: str = "") -> None:
        self.products += 1
        if outcome == "rejected":
            self.products_rejected += 1
            self.rejected_by_reason[reason] += 1
        else:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def count_line(self, loaded: bool, lines: int = 1) -> None:
        """`lines` physical lines ended (more than one only for a whole-document file)."""
        self.lines += lines
        if loaded:
            self.loaded += lines
        else:
            self.rejected += lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "products": self.products,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "products_rejected": self.products_rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "history_rows": self.history_rows,
            "pending_embeddings": self.pending_embeddings,
        }


@dataclass
class FileReport:
    """What happened to one file: `status` is loaded, up_to_date, or error."""

    path: str
    status: str = "loaded"
    stats: LoadStats = field(default_factory=LoadStats)
    start_offset: int = 0
    end_offset: int = 0
    message: str = ""
    pending_tail_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "start_offset": self.start_offset,
            "end_offset": self.end_offset,
            "message": self.message,
            "pending_tail_bytes": self.pending_tail_bytes,
            **self.stats.as_dict(),
        }


def _totals(stats: LoadStats) -> dict[str, tuple[int, int]]:
    """`load_totals` increments: lines by line outcome (`loaded`, `rejected`) in `lines`,
    products by product outcome (`inserted`, `updated`, `unchanged`, `rejected`) in
    `products`; outcomes with nothing to add are left out."""
    rows = {
        "loaded": (stats.loaded, 0),
        "rejected": (stats.rejected, stats.products_rejected),
        **{k: (0, getattr(stats, k)) for k in LOADED},
    }
    return {k: v for k, v in rows.items() if any(v)}


def _count_lines(items: list[_Item], loaded: set[int], stats: LoadStats) -> None:
    """One outcome per line: loaded when any of its products loaded."""
    lines: dict[int, bool] = {}
    weight: dict[int, int] = {}
    for item in items:
        key = item.line.offset
        lines[key] = lines.get(key, False) or id(item) in loaded
        weight[key] = item.physical_lines
    for key, was_loaded in lines.items():
        stats.count_line(was_loaded, weight[key])
