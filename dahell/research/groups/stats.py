"""Counts of the groups for /status: products placed, groups, several suppliers, largest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class GroupStats:
    products: int
    groups: int
    multi_supplier_groups: int
    largest: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "grouped_products": self.products,
            "groups": self.groups,
            "multi_supplier_groups": self.multi_supplier_groups,
            "largest_group": self.largest,
        }


async def group_stats(conn: asyncpg.Connection | asyncpg.Pool) -> GroupStats:
    """Counts for /status: products placed, groups, groups with several suppliers, largest."""
    row = await conn.fetchrow(
        """
        SELECT coalesce(sum(n), 0)::bigint AS products, count(*) AS groups,
               count(*) FILTER (WHERE suppliers > 1) AS multi, coalesce(max(n), 0) AS largest
        FROM (SELECT g.group_id, count(*) AS n, count(DISTINCT p.supplier_id) AS suppliers
              FROM research_groups AS g LEFT JOIN products AS p ON p.product_id = g.product_id
              GROUP BY g.group_id) AS x
        """
    )
    assert row is not None
    return GroupStats(row["products"], row["groups"], row["multi"], row["largest"])
