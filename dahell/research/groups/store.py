"""What the upkeep and the rebuild share: the locked transaction, the links, the writes.

One transaction holds the groups' advisory lock (`locked`), so several dahell processes never
interleave their writes; `find_links` finds look-alike neighbours (HNSW, `k` nearest within the
distance) and same-hash products; `write_groups`, `regroup` and `advance` record the result.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

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
class Item:
    """A product to place: its embedding time and photo hash (either may be missing)."""

    product_id: int
    processed_at: datetime | None
    sha: bytes | None


@dataclass
class Ctx:
    """One round's transaction and link settings, and what the round did so far."""

    conn: asyncpg.Connection
    distance: float
    k: int
    sha: bool
    result: UpkeepResult = field(default_factory=UpkeepResult)


async def has_sha_column(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    """Whether `embedding_jobs.image_sha256` exists (sql/005); without it, no byte-identity."""
    return bool(await conn.fetchval(HAS_SHA_SQL))


def sha_sql(sha: bool, alias: str = "e") -> tuple[str, str]:
    """The photo hash column and its join; NULL where `embedding_jobs` has no hash column."""
    if not sha:
        return "NULL::bytea", ""
    join = f"LEFT JOIN embedding_jobs AS j ON j.product_id = {alias}.product_id"
    return "j.image_sha256", join


@asynccontextmanager
async def locked(pool: asyncpg.Pool, distance: float, k: int) -> AsyncIterator[Ctx]:
    """One transaction holding the groups lock, tuned for the search; times it into the result."""
    started = time.monotonic()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", GROUPS_LOCK_KEY)
        await _tune(conn, k)
        ctx = Ctx(conn, distance, k, await has_sha_column(conn))
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


async def watermark(conn: asyncpg.Connection, name: str) -> datetime:
    value: datetime | None = await conn.fetchval(WATERMARK_SQL, name)
    return value if value is not None else EPOCH


async def find_links(ctx: Ctx, product_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Linked pairs (a, b) for each a in `product_ids`: look-alike neighbours and same hashes."""
    if not product_ids:
        return []
    ids = list(product_ids)
    rows = list(await ctx.conn.fetch(NEIGHBOURS_SQL, ids, ctx.k, ctx.distance))
    if ctx.sha:
        rows += await ctx.conn.fetch(SAME_HASH_SQL, ids)
    return [(r["a"], r["b"]) for r in rows]


async def regroup(conn: asyncpg.Connection, assignment: dict[int, int]) -> None:
    if assignment:
        await conn.execute(REGROUP_SQL, list(assignment), list(assignment.values()))


async def write_groups(ctx: Ctx, items: list[Item], assignment: dict[int, int]) -> None:
    """Upsert each item's group, with the embedding time and image hash it was placed from."""
    await ctx.conn.execute(
        UPSERT_SQL,
        [i.product_id for i in items],
        [assignment[i.product_id] for i in items],
        [i.processed_at for i in items],
        [i.sha for i in items],
    )


async def advance(ctx: Ctx, items: list[Item]) -> None:
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
