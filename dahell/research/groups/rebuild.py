"""Every group from scratch, with the same link rule as the upkeep; and the rule itself.

`recompute_all` is the benchmark's baseline and a repair if the table is ever in doubt;
`ensure_rule` rebuilds when the groups were built with another distance.
"""

from __future__ import annotations

import asyncpg

from dahell.research.groups.store import (
    DEFAULT_NEIGHBOURS,
    Ctx,
    Item,
    UpkeepResult,
    advance,
    find_links,
    locked,
    sha_sql,
    write_groups,
)
from dahell.research.groups.union_find import UnionFind

SET_RULE_SQL = """
INSERT INTO research_upkeep (name, value) VALUES ('rule', $1)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()
"""

ALL_ITEMS_SQL = """
SELECT e.product_id, e.processed_at, {sha} AS sha
FROM product_embeddings AS e {join}
{hash_only}
"""


async def recompute_all(
    pool: asyncpg.Pool, distance: float, *, k: int = DEFAULT_NEIGHBOURS, chunk: int = 1000
) -> UpkeepResult:
    """Rebuild every group from scratch with the same link rule (baseline and repair)."""
    async with locked(pool, distance, k) as ctx:
        items = await _all_items(ctx)
        ids = [i.product_id for i in items]
        uf = UnionFind(ids)
        for start in range(0, len(ids), chunk):
            for a, b in await find_links(ctx, ids[start : start + chunk]):
                if b in uf.parent:
                    uf.union(a, b)
        assignment = uf.groups()
        await ctx.conn.execute("DELETE FROM research_groups")
        await write_groups(ctx, items, assignment)
        await advance(ctx, items)
        await ctx.conn.execute(SET_RULE_SQL, rule_text(distance))
    ctx.result.placed = len(ids)
    return ctx.result


async def _all_items(ctx: Ctx) -> list[Item]:
    sha_col, join = sha_sql(ctx.sha)
    hash_only = ""
    if ctx.sha:
        hash_only = (
            "UNION ALL SELECT j.product_id, NULL, j.image_sha256 FROM embedding_jobs AS j"
            " WHERE j.image_sha256 IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM product_embeddings AS x WHERE x.product_id = j.product_id)"
        )
    sql = ALL_ITEMS_SQL.format(sha=sha_col, join=join, hash_only=hash_only)
    return [Item(r[0], r[1], r[2]) for r in await ctx.conn.fetch(sql)]


def rule_text(distance: float) -> str:
    """The link rule as recorded in `research_upkeep` (a change means the groups are rebuilt)."""
    return f"distance={distance:g}"


async def ensure_rule(
    pool: asyncpg.Pool, distance: float, *, k: int = DEFAULT_NEIGHBOURS
) -> UpkeepResult | None:
    """Rebuild every group when they were built with another distance; None when they were not.

    With no group yet, only the rule is recorded: the incremental upkeep places everything,
    in batches, as it would new embeddings.
    """
    stored = await pool.fetchval("SELECT value FROM research_upkeep WHERE name = 'rule'")
    if stored == rule_text(distance):
        return None
    if stored is None and not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM research_groups)"):
        await pool.execute(SET_RULE_SQL, rule_text(distance))
        return None
    return await recompute_all(pool, distance, k=k)
