"""One incremental round: place new and changed products, take out the ones that left.

See the package docstring (`dahell.research.groups`) for the three steps.
"""

from __future__ import annotations

import asyncpg

from dahell.research.groups.store import (
    DEFAULT_NEIGHBOURS,
    EMB_WATERMARK,
    JOB_WATERMARK,
    OVERLAP,
    Ctx,
    Item,
    UpkeepResult,
    advance,
    find_links,
    locked,
    regroup,
    sha_sql,
    watermark,
    write_groups,
)
from dahell.research.groups.union_find import UnionFind

NEW_EMBEDDINGS_SQL = """
SELECT e.product_id, e.processed_at, {sha} AS sha
FROM product_embeddings AS e
LEFT JOIN research_groups AS g ON g.product_id = e.product_id
{join}
WHERE e.processed_at > $1::timestamptz - interval '{overlap}'
  AND (g.product_id IS NULL OR g.embedded_at IS DISTINCT FROM e.processed_at
       OR g.image_sha256 IS DISTINCT FROM {sha})
ORDER BY e.processed_at, e.product_id
LIMIT $2
"""

NEW_HASHES_SQL = """
SELECT j.product_id, NULL::timestamptz AS processed_at, j.image_sha256 AS sha, j.updated_at
FROM embedding_jobs AS j
LEFT JOIN research_groups AS g ON g.product_id = j.product_id
LEFT JOIN product_embeddings AS e ON e.product_id = j.product_id
WHERE j.image_sha256 IS NOT NULL AND j.updated_at > $1::timestamptz - interval '{overlap}'
  AND e.product_id IS NULL
  AND (g.product_id IS NULL OR g.image_sha256 IS DISTINCT FROM j.image_sha256)
ORDER BY j.updated_at, j.product_id
LIMIT $2
"""

ORPHANS_SQL = """
SELECT g.product_id FROM research_groups AS g
LEFT JOIN product_embeddings AS e ON e.product_id = g.product_id
{join}
WHERE e.product_id IS NULL AND (g.image_sha256 IS NULL OR g.image_sha256 IS DISTINCT FROM {sha})
LIMIT $1
"""

GROUP_OF_SQL = """
SELECT product_id, group_id FROM research_groups WHERE product_id = ANY($1::bigint[])
"""

MEMBERS_SQL = """
SELECT product_id, group_id FROM research_groups WHERE group_id = ANY($1::bigint[])
"""


async def upkeep_round(
    pool: asyncpg.Pool, distance: float, *, k: int = DEFAULT_NEIGHBOURS, batch: int = 500
) -> UpkeepResult:
    """Place up to `batch` new or changed products, in one transaction; see the module doc."""
    async with locked(pool, distance, k) as ctx:
        items = await _work(ctx, batch)
        orphans = await _orphans(ctx, batch)
        await _leave(ctx, [i.product_id for i in items] + orphans, removed=set(orphans))
        await _place(ctx, items)
        await advance(ctx, items)
    return ctx.result


async def _work(ctx: Ctx, batch: int) -> list[Item]:
    sha_col, join = sha_sql(ctx.sha)
    mark = await watermark(ctx.conn, EMB_WATERMARK)
    sql = NEW_EMBEDDINGS_SQL.format(sha=sha_col, join=join, overlap=OVERLAP)
    rows = list(await ctx.conn.fetch(sql, mark, batch))
    if ctx.sha and len(rows) < batch:
        job_mark = await watermark(ctx.conn, JOB_WATERMARK)
        rows += await ctx.conn.fetch(
            NEW_HASHES_SQL.format(overlap=OVERLAP), job_mark, batch - len(rows)
        )
    return [Item(r["product_id"], r["processed_at"], r["sha"]) for r in rows]


async def _orphans(ctx: Ctx, batch: int) -> list[int]:
    sha_col, join = sha_sql(ctx.sha, "g")
    rows = await ctx.conn.fetch(ORPHANS_SQL.format(sha=sha_col, join=join), batch)
    return [r["product_id"] for r in rows]


async def _leave(ctx: Ctx, product_ids: list[int], removed: set[int]) -> None:
    """Take these products out of their groups; re-split what remains of each group."""
    if not product_ids:
        return
    rows = await ctx.conn.fetch(
        "DELETE FROM research_groups WHERE product_id = ANY($1::bigint[])"
        " RETURNING product_id, group_id",
        product_ids,
    )
    ctx.result.moved += sum(1 for r in rows if r["product_id"] not in removed)
    ctx.result.removed += sum(1 for r in rows if r["product_id"] in removed)
    old_groups = sorted({r["group_id"] for r in rows})
    if not old_groups:
        return
    members = await ctx.conn.fetch(MEMBERS_SQL, old_groups)
    by_group: dict[int, set[int]] = {}
    for m in members:
        by_group.setdefault(m["group_id"], set()).add(m["product_id"])
    everyone = [m["product_id"] for m in members]
    uf = UnionFind(everyone)
    for a, b in await find_links(ctx, everyone):
        if b in uf.parent and _same_group(by_group, a, b):
            uf.union(a, b)
    assignment = uf.groups()
    ctx.result.split_groups += sum(
        1 for gid, ids in by_group.items() if len({assignment[i] for i in ids}) > 1
    )
    await regroup(ctx.conn, assignment)


def _same_group(by_group: dict[int, set[int]], a: int, b: int) -> bool:
    return any(a in ids and b in ids for ids in by_group.values())


async def _place(ctx: Ctx, items: list[Item]) -> None:
    """Union the items with their links' groups; write the merged components."""
    if not items:
        return
    ids = [i.product_id for i in items]
    links = await find_links(ctx, ids)
    partners = sorted({b for _, b in links} - set(ids))
    existing = {
        r["product_id"]: r["group_id"] for r in await ctx.conn.fetch(GROUP_OF_SQL, partners)
    }
    uf = UnionFind(ids)
    for gid in set(existing.values()):
        uf.add(gid)
    for a, b in links:
        if b in existing:
            uf.union(a, existing[b])  # a group is represented by its id (= its smallest member)
        elif b in uf.parent and b in set(ids):
            uf.union(a, b)
    assignment = uf.groups()
    joined = {gid for gid in set(existing.values()) if assignment[gid] != gid}
    ctx.result.merged_groups += len(joined)
    if joined:
        members = await ctx.conn.fetch(MEMBERS_SQL, sorted(joined))
        await regroup(ctx.conn, {m["product_id"]: assignment[m["group_id"]] for m in members})
    await write_groups(ctx, items, assignment)
    ctx.result.placed += len(ids) - ctx.result.moved
