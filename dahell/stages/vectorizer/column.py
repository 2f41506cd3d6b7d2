"""The embedding column: `product_embeddings.embedding_visual` sized to the model's dimension."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from dahell.errors import ModelMismatch

#: Advisory lock serialising column resizes between dahell processes ("dahell-v").
RESIZE_LOCK_KEY = 0x6461_6865_6C6C_76

COLUMN_TYPE_SQL = """
SELECT format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = 'product_embeddings'::regclass
  AND a.attname = 'embedding_visual' AND NOT a.attisdropped
"""


async def embedding_column_dimension(conn: asyncpg.Connection) -> int | None:
    """The `N` of `product_embeddings.embedding_visual vector(N)` (None: no fixed dimension)."""
    text = await conn.fetchval(COLUMN_TYPE_SQL)
    match = re.fullmatch(r"vector\((\d+)\)", str(text))
    return int(match.group(1)) if match else None


async def ensure_embedding_dimension(pool: asyncpg.Pool, dim: int, log: Any) -> None:
    """Make the column hold `dim`-dimensional vectors, or raise `ModelMismatch`.

    An empty table is altered to the model's dimension (index rebuilt, one transaction, under an
    advisory lock); a table that holds embeddings of another dimension parks the stage.
    """
    async with pool.acquire() as conn:
        if await embedding_column_dimension(conn) == dim:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", RESIZE_LOCK_KEY)
            column = await embedding_column_dimension(conn)
            if column == dim:
                return
            count = await conn.fetchval("SELECT count(*) FROM product_embeddings")
            if count:
                raise ModelMismatch(
                    "model_dimension_mismatch",
                    f"the model gives {dim} dimensions, product_embeddings.embedding_visual "
                    f"holds {column} with {count} embeddings: set vectorizer.model_dir to a "
                    f"model of {column} dimensions, or re-embed everything with this one "
                    "(TRUNCATE product_embeddings; UPDATE embedding_jobs SET state='pending', "
                    "attempts=0, next_attempt_at=now()) and restart",
                )
            await conn.execute("DROP INDEX IF EXISTS product_embeddings_visual_hnsw")
            await conn.execute(
                f"ALTER TABLE product_embeddings ALTER COLUMN embedding_visual TYPE vector({dim})"
            )
            await conn.execute(
                "CREATE INDEX product_embeddings_visual_hnsw ON product_embeddings "
                "USING hnsw (embedding_visual vector_cosine_ops)"
            )
        await conn.reload_schema_state()
    log.info("embedding_column_resized", from_dim=column, to_dim=dim)
