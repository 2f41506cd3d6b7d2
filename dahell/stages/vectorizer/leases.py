"""Leases: who holds a claimed row, and how a lease is renewed, given back or swept.

A claim names its run (`worker_id`); a lease not renewed runs out and makes the row due again
for any worker. `SWEEP_SQL` fails for good the rows that keep losing their workers.
"""

from __future__ import annotations

import os
import socket
import uuid

import asyncpg

SWEEP_SQL = """
UPDATE embedding_jobs
SET state = 'failed',
    reason = CASE WHEN state = 'claimed' THEN 'lease_expired'
                  ELSE coalesce(reason, 'lease_expired') END,
    detail = CASE WHEN state = 'claimed'
                  THEN 'claimed ' || attempts || ' times, never finished (last: ' ||
                       coalesce(claimed_by, '?') || ')'
                  ELSE detail END,
    next_attempt_at = 'infinity', lease_until = NULL, claimed_by = NULL, updated_at = now()
WHERE state <> 'done' AND next_attempt_at <= now() AND attempts - transient_failures >= $1
  AND (state <> 'claimed' OR lease_until < now())
"""

RENEW_SQL = """
UPDATE embedding_jobs
SET lease_until = now() + make_interval(secs => $3),
    next_attempt_at = now() + make_interval(secs => $3)
WHERE product_id = ANY($1::bigint[]) AND state = 'claimed' AND claimed_by = $2
"""

RELEASE_SQL = """
UPDATE embedding_jobs
SET state = 'pending', attempts = greatest(attempts - $3, 0), lease_until = NULL,
    claimed_by = NULL, next_attempt_at = now(), updated_at = now()
WHERE state = 'claimed' AND claimed_by = ANY($1::text[])
  AND ($2::bigint[] IS NULL OR product_id = ANY($2::bigint[]))
"""


def worker_id() -> str:
    """`hostname:pid:run` — names the claims of one run of the stage in one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


async def release(pool: asyncpg.Pool, runs: list[str], ids: list[int] | None, refund: int) -> int:
    """Give claims back (pending, due now); `refund` 1 returns the attempt they cost."""
    status = await pool.execute(RELEASE_SQL, runs, ids, refund)
    return int(status.split()[-1])
