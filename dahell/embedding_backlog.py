"""What the vectorizer still owes: the backlog's size and reasons, and a full re-embed.

The read side (research, look-alike answers, status) asks `pending_count` "how many products
still wait for an embedding"; `retry_counts` says how many failed images wait for a retry and
why; `reset_embeddings` is `python -m dahell reembed`: every product embedded again, by the model
`vectorizer.model_dir` names at the next start.
"""

from __future__ import annotations

import sys
from typing import Any

import asyncpg

from dahell import db
from dahell.config import Config

__all__ = ["PENDING_SQL", "pending_count", "reembed_command", "reset_embeddings", "retry_counts"]

#: Products still waiting for an embedding: pending, claimed, or failed with a retry to come
#: (`next_attempt_at` not infinity). Failed for good is not waiting: it has a final reason.
PENDING_SQL = """
SELECT count(*) FROM embedding_jobs
WHERE state IN ('pending', 'claimed')
   OR (state = 'failed' AND next_attempt_at <> 'infinity'::timestamptz)
"""

RETRY_COUNTS_SQL = """
SELECT coalesce(reason, 'unknown') AS reason, count(*) AS n FROM embedding_jobs
WHERE state = 'failed' AND next_attempt_at <> 'infinity'::timestamptz
GROUP BY 1 ORDER BY n DESC, reason
"""

RESET_SQL = """
UPDATE embedding_jobs
SET state = 'pending', attempts = 0, transient_failures = 0, reason = NULL, detail = NULL,
    next_attempt_at = now(), lease_until = NULL, claimed_by = NULL, updated_at = now()
"""


async def pending_count(conn: asyncpg.Connection | asyncpg.Pool | Any) -> int:
    """How many products still wait for an embedding (pending + claimed + failed-but-retrying)."""
    return int(await conn.fetchval(PENDING_SQL))


async def retry_counts(conn: asyncpg.Connection | asyncpg.Pool | Any) -> dict[str, int]:
    """Failed images that will be tried again, by reason (`http_503`, `timeout`, ...)."""
    return {r["reason"]: r["n"] for r in await conn.fetch(RETRY_COUNTS_SQL)}


async def reset_embeddings(pool: asyncpg.Pool) -> tuple[int, int]:
    """Drop every embedding and queue every product again; (embeddings dropped, jobs queued).

    One transaction. The next vectorizer start resizes the (now empty) column to its model's
    dimension, so this is how a model of another dimension replaces the current one.
    """
    async with pool.acquire() as conn, conn.transaction():
        dropped = await conn.fetchval("SELECT count(*) FROM product_embeddings")
        await conn.execute("TRUNCATE product_embeddings")
        status = await conn.execute(RESET_SQL)
    return int(dropped), int(status.split()[-1])


async def reembed_command(config: Config, *, yes: bool) -> int:
    """`python -m dahell reembed [--yes]`: without `--yes`, only say what it would do (exit 2)."""
    async with db.database(config) as database:
        pool = database.pool
        if not yes:
            embeddings = await pool.fetchval("SELECT count(*) FROM product_embeddings")
            jobs = await pool.fetchval("SELECT count(*) FROM embedding_jobs")
            sys.stderr.write(
                f"dahell: reembed would drop {embeddings:,} embeddings and queue {jobs:,} "
                "products for the model in vectorizer.model_dir; run it again with --yes "
                "(stop the daemon first)\n"
            )
            return 2
        dropped, queued = await reset_embeddings(pool)
    sys.stdout.write(
        f"dropped {dropped:,} embeddings, queued {queued:,} products: start dahell with the new "
        f"vectorizer.model_dir ({config.vectorizer.model_dir})\n"
    )
    return 0
