"""Same-item groups: products whose photos are look-alikes, kept up to date as embeddings arrive.

Two products are *linked* when the cosine distance of their embeddings is at most
`research.same_item_distance`, or when their photo files are byte-identical
(`embedding_jobs.image_sha256`, known as soon as the vectorizer downloaded the bytes, before any
model runs). A group is a connected component of that relation; its id is the smallest
product_id among its members, so the grouping depends on membership alone and an incremental
upkeep gives the same ids as a full recomputation. Every embedded product has a row in
`research_groups` (a product alone is a group of one).

Upkeep (`upkeep_round`, run by the `groups` stage) is incremental, never all-pairs:

1. Work: embeddings whose `processed_at` moved past the `research_upkeep` watermark (minus
   `OVERLAP`, for transactions that committed late) and differ from what `research_groups`
   recorded; jobs with a new `image_sha256` and no embedding; rows whose embedding is gone.
2. A product that already had a group (its embedding changed, or vanished) leaves it first; what
   remains of its old group is re-split by neighbour expansion over those members only.
3. New links come from the HNSW index, `k` nearest per product (`ORDER BY embedding <=> v
   LIMIT k`, one LATERAL query per batch), filtered by distance, plus same-hash products; a
   union-find over the batch, its neighbours' existing groups and those links gives the new
   components, which take the smallest id of everything they joined.

The k-nearest cut means a product with more than k look-alikes links to the k nearest only;
the rest join through them (look-alikes are near each other), so k bounds work, not groups.
`recompute_all` rebuilds everything with the same link rule (the benchmark's baseline, and a
repair if the table is ever in doubt). Both hold an advisory lock, so several dahell processes
never interleave their writes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

__all__ = [
    "DEFAULT_NEIGHBOURS",
    "GroupStats",
    "UnionFind",
    "UpkeepResult",
    "ensure_rule",
    "group_stats",
    "recompute_all",
    "rule_text",
    "upkeep_round",
]

#: Advisory lock held while groups are written ("dahell-g").
GROUPS_LOCK_KEY = 0x6461_6865_6C6C_67
DEFAULT_NEIGHBOURS = 32
#: How far behind the watermark each round looks again (late commits).
OVERLAP = "10 minutes"
EMB_WATERMARK = "embeddings"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JOB_WATERMARK = "jobs"

HAS_SHA_SQL = """
SELECT EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_name = 'embedding_jobs' AND column_name = 'image_sha256'
                 AND table_schema = current_schema())
"""

WATERMARK_SQL = "SELECT watermark FROM research_upkeep WHERE name = $1"

SET_WATERMARK_SQL = """
INSERT INTO research_upkeep (name, watermark) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET watermark = greatest(research_upkeep.watermark, $2),
    updated_at = now()
"""

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

# k nearest per product through the HNSW index (a LATERAL rescan per outer row), by distance.
NEIGHBOURS_SQL = """
SELECT src.product_id AS a, n.product_id AS b
FROM product_embeddings AS src
CROSS JOIN LATERAL (
    SELECT o.product_id, o.embedding_visual <=> src.embedding_visual AS distance
    FROM product_embeddings AS o
    ORDER BY o.embedding_visual <=> src.embedding_visual
    LIMIT $2
) AS n
WHERE src.product_id = ANY($1::bigint[]) AND n.product_id <> src.product_id
  AND n.distance <= $3
"""

SAME_HASH_SQL = """
SELECT a.product_id AS a, b.product_id AS b
FROM embedding_jobs AS a
JOIN embedding_jobs AS b ON b.image_sha256 = a.image_sha256 AND b.product_id <> a.product_id
WHERE a.product_id = ANY($1::bigint[]) AND a.image_sha256 IS NOT NULL
"""

GROUP_OF_SQL = """
SELECT product_id, group_id FROM research_groups WHERE product_id = ANY($1::bigint[])
"""

MEMBERS_SQL = """
SELECT product_id, group_id FROM research_groups WHERE group_id = ANY($1::bigint[])
"""

REGROUP_SQL = """
UPDATE research_groups AS g SET group_id = v.group_id, updated_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS v(product_id, group_id)
WHERE g.product_id = v.product_id AND g.group_id <> v.group_id
"""

UPSERT_SQL = """
INSERT INTO research_groups AS g (product_id, group_id, embedded_at, image_sha256)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::bytea[])
ON CONFLICT (product_id) DO UPDATE SET group_id = excluded.group_id,
    embedded_at = excluded.embedded_at, image_sha256 = excluded.image_sha256, updated_at = now()
"""

SET_RULE_SQL = """
INSERT INTO research_upkeep (name, value) VALUES ('rule', $1)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()
"""

ALL_ITEMS_SQL = """
SELECT e.product_id, e.processed_at, {sha} AS sha
FROM product_embeddings AS e {join}
{hash_only}
"""


class UnionFind:
    """Disjoint sets over product ids; each set's representative is its smallest id."""

    def __init__(self, items: Iterable[int] = ()) -> None:
        self.parent: dict[int, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: int) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: int) -> int:
        self.add(item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = min(ra, rb), max(ra, rb)
            self.parent[high] = low

    def groups(self) -> dict[int, int]:
        """item -> smallest item of its set."""
        return {item: self.find(item) for item in self.parent}


@dataclass
class UpkeepResult:
    """What one round did; counts are products unless named otherwise."""

    placed: int = 0  # got a group for the first time
    moved: int = 0  # already had one and were placed again (embedding or photo changed)
    removed: int = 0  # lost their embedding (and photo hash): no group any more
    merged_groups: int = 0  # groups that disappeared into another
    split_groups: int = 0  # groups re-split after a member left
    seconds: float = 0.0

    @property
    def work(self) -> int:
        return self.placed + self.moved + self.removed


@dataclass(frozen=True)
class _Item:
    product_id: int
    processed_at: datetime | None
    sha: bytes | None


@dataclass
class _Ctx:
    conn: asyncpg.Connection
    distance: float
    k: int
    sha: bool
    result: UpkeepResult = field(default_factory=UpkeepResult)


async def has_sha_column(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    """Whether `embedding_jobs.image_sha256` exists (sql/005); without it, no byte-identity."""
    return bool(await conn.fetchval(HAS_SHA_SQL))


def _sha_sql(sha: bool, alias: str = "e") -> tuple[str, str]:
    if not sha:
        return "NULL::bytea", ""
    join = f"LEFT JOIN embedding_jobs AS j ON j.product_id = {alias}.product_id"
    return "j.image_sha256", join


async def upkeep_round(
    pool: asyncpg.Pool, distance: float, *, k: int = DEFAULT_NEIGHBOURS, batch: int = 500
) -> UpkeepResult:
    """Place up to `batch` new or changed products, in one transaction; see the module doc."""
    async with _locked(pool, distance, k) as ctx:
        items = await _work(ctx, batch)
        orphans = await _orphans(ctx, batch)
        await _leave(ctx, [i.product_id for i in items] + orphans, removed=set(orphans))
        await _place(ctx, items)
        await _advance(ctx, items)
    return ctx.result


@asynccontextmanager
async def _locked(pool: asyncpg.Pool, distance: float, k: int) -> AsyncIterator[_Ctx]:
    """One transaction holding the groups lock, tuned for the search; times it into the result."""
    started = time.monotonic()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", GROUPS_LOCK_KEY)
        await _tune(conn, k)
        ctx = _Ctx(conn, distance, k, await has_sha_column(conn))
        yield ctx
    ctx.result.seconds = time.monotonic() - started


async def _tune(conn: asyncpg.Connection, k: int) -> None:
    """Search settings for this transaction.

    `force_custom_plan`: asyncpg reuses prepared statements, and after five runs PostgreSQL may
    pick a generic plan; with the LIMIT unknown that plan sorted the whole table by distance for
    every product (an all-pairs pass: 23 s instead of 2 s per 1,000 at 1,152 dimensions).
    """
    await conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(k * 2, 1000))}")
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


async def _work(ctx: _Ctx, batch: int) -> list[_Item]:
    sha_col, join = _sha_sql(ctx.sha)
    mark = await _watermark(ctx.conn, EMB_WATERMARK)
    sql = NEW_EMBEDDINGS_SQL.format(sha=sha_col, join=join, overlap=OVERLAP)
    rows = list(await ctx.conn.fetch(sql, mark, batch))
    if ctx.sha and len(rows) < batch:
        job_mark = await _watermark(ctx.conn, JOB_WATERMARK)
        rows += await ctx.conn.fetch(
            NEW_HASHES_SQL.format(overlap=OVERLAP), job_mark, batch - len(rows)
        )
    return [_Item(r["product_id"], r["processed_at"], r["sha"]) for r in rows]


async def _watermark(conn: asyncpg.Connection, name: str) -> datetime:
    value: datetime | None = await conn.fetchval(WATERMARK_SQL, name)
    return value if value is not None else EPOCH


async def _orphans(ctx: _Ctx, batch: int) -> list[int]:
    sha_col, join = _sha_sql(ctx.sha, "g")
    rows = await ctx.conn.fetch(ORPHANS_SQL.format(sha=sha_col, join=join), batch)
    return [r["product_id"] for r in rows]


async def _leave(ctx: _Ctx, product_ids: list[int], removed: set[int]) -> None:
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
    for a, b in await _links(ctx, everyone):
        if b in uf.parent and _same_group(by_group, a, b):
            uf.union(a, b)
    assignment = uf.groups()
    ctx.result.split_groups += sum(
        1 for gid, ids in by_group.items() if len({assignment[i] for i in ids}) > 1
    )
    await _regroup(ctx.conn, assignment)


def _same_group(by_group: dict[int, set[int]], a: int, b: int) -> bool:
    return any(a in ids and b in ids for ids in by_group.values())


async def _links(ctx: _Ctx, product_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Linked pairs (a, b) for each a in `product_ids`: look-alike neighbours and same hashes."""
    if not product_ids:
        return []
    ids = list(product_ids)
    rows = list(await ctx.conn.fetch(NEIGHBOURS_SQL, ids, ctx.k, ctx.distance))
    if ctx.sha:
        rows += await ctx.conn.fetch(SAME_HASH_SQL, ids)
    return [(r["a"], r["b"]) for r in rows]


async def _place(ctx: _Ctx, items: list[_Item]) -> None:
    """Union the items with their links' groups; write the merged components."""
    if not items:
        return
    ids = [i.product_id for i in items]
    links = await _links(ctx, ids)
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
        await _regroup(ctx.conn, {m["product_id"]: assignment[m["group_id"]] for m in members})
    await _write_groups(ctx, items, assignment)
    ctx.result.placed += len(ids) - ctx.result.moved


async def _regroup(conn: asyncpg.Connection, assignment: dict[int, int]) -> None:
    if assignment:
        await conn.execute(REGROUP_SQL, list(assignment), list(assignment.values()))


async def _write_groups(ctx: _Ctx, items: list[_Item], assignment: dict[int, int]) -> None:
    """Upsert each item's group, with the embedding time and image hash it was placed from."""
    await ctx.conn.execute(
        UPSERT_SQL,
        [i.product_id for i in items],
        [assignment[i.product_id] for i in items],
        [i.processed_at for i in items],
        [i.sha for i in items],
    )


async def _advance(ctx: _Ctx, items: list[_Item]) -> None:
    embedded = [i.processed_at for i in items if i.processed_at is not None]
    if embedded:
        await ctx.conn.execute(SET_WATERMARK_SQL, EMB_WATERMARK, max(embedded))
    if ctx.sha and any(i.processed_at is None for i in items):
        newest = await ctx.conn.fetchval(
            "SELECT max(updated_at) FROM embedding_jobs WHERE product_id = ANY($1::bigint[])",
            [i.product_id for i in items if i.processed_at is None],
        )
        if newest is not None:
            await ctx.conn.execute(SET_WATERMARK_SQL, JOB_WATERMARK, newest)


async def recompute_all(
    pool: asyncpg.Pool, distance: float, *, k: int = DEFAULT_NEIGHBOURS, chunk: int = 1000
) -> UpkeepResult:
    """Rebuild every group from scratch with the same link rule (baseline and repair)."""
    async with _locked(pool, distance, k) as ctx:
        items = await _all_items(ctx)
        ids = [i.product_id for i in items]
        uf = UnionFind(ids)
        for start in range(0, len(ids), chunk):
            for a, b in await _links(ctx, ids[start : start + chunk]):
                if b in uf.parent:
                    uf.union(a, b)
        assignment = uf.groups()
        await ctx.conn.execute("DELETE FROM research_groups")
        await _write_groups(ctx, items, assignment)
        await _advance(ctx, items)
        await ctx.conn.execute(SET_RULE_SQL, rule_text(distance))
    ctx.result.placed = len(ids)
    return ctx.result


async def _all_items(ctx: _Ctx) -> list[_Item]:
    sha_col, join = _sha_sql(ctx.sha)
    hash_only = ""
    if ctx.sha:
        hash_only = (
            "UNION ALL SELECT j.product_id, NULL, j.image_sha256 FROM embedding_jobs AS j"
            " WHERE j.image_sha256 IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM product_embeddings AS x WHERE x.product_id = j.product_id)"
        )
    sql = ALL_ITEMS_SQL.format(sha=sha_col, join=join, hash_only=hash_only)
    return [_Item(r[0], r[1], r[2]) for r in await ctx.conn.fetch(sql)]


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
