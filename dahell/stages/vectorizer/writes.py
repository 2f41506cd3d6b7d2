"""Writing: embeddings, copies and failures, one statement per batch; the retry policy.

A write lands only where the job is still claimed by this run and its image URL is the one
downloaded; the retry kinds here (`transient`, `limited`, final) are the ones
`WRITE_FAILURES_SQL` reads.
"""

from __future__ import annotations

import asyncio
import random
import re
import time

import numpy as np

from dahell.stages.vectorizer.jobs import SAME_BYTES, SAME_URL, Job, Outcome, RunState
from dahell.stages.vectorizer.leases import release

#: How long the writer waits for more outcomes before writing a partial batch.
WRITE_LINGER_S = 0.1
#: Failures that may go away by themselves: retried with a capped backoff, without limit.
TRANSIENT_REASONS = frozenset({"timeout", "connection_error"})
#: Failures retried with backoff, but only while attempts allow (a bug is rarely fixed by time).
LIMITED_REASONS = frozenset({"internal_error"})

WRITE_EMBEDDINGS_SQL = """
WITH input AS (
    SELECT ids.product_id, ids.image_url, ids.sha,
           ($3::real[])[(ids.n - 1) * $4 + 1 : ids.n * $4]::vector AS embedding
    FROM unnest($1::bigint[], $2::text[], $7::bytea[]) WITH ORDINALITY
         AS ids(product_id, image_url, sha, n)
), done AS (
    UPDATE embedding_jobs AS j
    SET state = 'done', reason = NULL, detail = NULL, lease_until = NULL, claimed_by = NULL,
        next_attempt_at = now(), updated_at = now(), image_sha256 = i.sha
    FROM input AS i
    WHERE j.product_id = i.product_id AND j.state = 'claimed' AND j.claimed_by = $5
      AND j.image_url = i.image_url
    RETURNING j.product_id, j.image_url
)
INSERT INTO product_embeddings AS e
    (product_id, embedding_visual, image_url, model_sha256, processed_at)
SELECT i.product_id, i.embedding, i.image_url, $6, now()
FROM input AS i JOIN done USING (product_id, image_url)
ON CONFLICT (product_id) DO UPDATE
SET embedding_visual = EXCLUDED.embedding_visual, image_url = EXCLUDED.image_url,
    model_sha256 = EXCLUDED.model_sha256, processed_at = EXCLUDED.processed_at
RETURNING e.product_id
"""

#: Copy donors' embeddings to claimed jobs in one statement (the vectors never leave PostgreSQL).
WRITE_COPIES_SQL = """
WITH src AS (
    SELECT i.product_id, i.image_url, i.sha, e.embedding_visual, e.model_sha256
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[])
         AS i(product_id, image_url, donor, sha)
    JOIN product_embeddings AS e ON e.product_id = i.donor
), done AS (
    UPDATE embedding_jobs AS j
    SET state = 'done', reason = NULL, detail = NULL, lease_until = NULL, claimed_by = NULL,
        next_attempt_at = now(), updated_at = now(), image_sha256 = s.sha
    FROM src AS s
    WHERE j.product_id = s.product_id AND j.state = 'claimed' AND j.claimed_by = $5
      AND j.image_url = s.image_url
    RETURNING j.product_id, j.image_url
)
INSERT INTO product_embeddings AS e
    (product_id, embedding_visual, image_url, model_sha256, processed_at)
SELECT s.product_id, s.embedding_visual, s.image_url, s.model_sha256, now()
FROM src AS s JOIN done USING (product_id, image_url)
ON CONFLICT (product_id) DO UPDATE
SET embedding_visual = EXCLUDED.embedding_visual, image_url = EXCLUDED.image_url,
    model_sha256 = EXCLUDED.model_sha256, processed_at = EXCLUDED.processed_at
RETURNING e.product_id
"""

#: retry_s NULL: final. kind 'transient' retries without limit (and counts in
#: transient_failures); 'limited' retries while attempts not ended by a transient failure stay
#: below max_attempts ($6).
WRITE_FAILURES_SQL = """
UPDATE embedding_jobs AS j
SET state = 'failed', reason = f.reason, detail = f.detail, lease_until = NULL,
    claimed_by = NULL, updated_at = now(), image_sha256 = coalesce(f.sha, j.image_sha256),
    transient_failures = j.transient_failures + (f.kind = 'transient')::int,
    next_attempt_at = CASE
        WHEN f.retry_s IS NULL THEN 'infinity'::timestamptz
        WHEN f.kind = 'limited' AND j.attempts - j.transient_failures >= $6
            THEN 'infinity'::timestamptz
        ELSE now() + make_interval(secs => f.retry_s) END
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[], $8::text[],
            $9::bytea[])
     AS f(product_id, image_url, reason, detail, retry_s, kind, sha)
WHERE j.product_id = f.product_id AND j.state = 'claimed' AND j.claimed_by = $7
  AND j.image_url IS NOT DISTINCT FROM f.image_url
RETURNING j.product_id, j.attempts, j.transient_failures,
          j.next_attempt_at = 'infinity'::timestamptz AS final
"""


def backoff_seconds(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before the next try after failed attempt number `attempts` (1-based), jittered."""
    delay = min(base_s * 2.0 ** max(attempts - 1, 0), max_s)
    return min(delay * rng.uniform(0.8, 1.2), max_s)


def retry_kind(reason: str) -> str | None:
    """'transient' (retried without limit), 'limited' (retried up to max_attempts) or None."""
    if reason in TRANSIENT_REASONS:
        return "transient"
    if reason in LIMITED_REASONS:
        return "limited"
    match = re.fullmatch(r"http_(\d{3})", reason)
    if match is not None and (int(match.group(1)) >= 500 or match.group(1) in ("408", "429")):
        return "transient"
    return None


def is_transient(reason: str) -> bool:
    """Whether a failure may go away by itself (so it is retried with backoff)."""
    return retry_kind(reason) is not None


class WriteSteps(RunState):
    """The writer: batches outcomes and writes them, counting each by its end."""

    async def _write_loop(self) -> None:
        while True:
            batch = [await self.write_q.get()]
            size = self.ctx.config.vectorizer.batch_size
            deadline = time.monotonic() + WRITE_LINGER_S
            while len(batch) < size:
                if not self.write_q.empty():
                    batch.append(self.write_q.get_nowait())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self.ctx.stopping.is_set():
                    break
                try:
                    batch.append(await asyncio.wait_for(self.write_q.get(), left))
                except TimeoutError:
                    break
            self._writing = True
            try:
                async with self.ctx.working():
                    await self._flush(batch)
            finally:
                self._writing = False

    async def _flush(self, batch: list[Outcome]) -> None:
        started = time.monotonic()
        good = [o for o in batch if o.vector is not None]
        copies = [o for o in batch if o.vector is None and o.donor is not None]
        bad = [o for o in batch if o.vector is None and o.donor is None]
        if good:
            await self._write_embeddings(good, started)
        for reused in {o.reused for o in copies}:
            pairs = [(o.job, o.donor or 0) for o in copies if o.reused == reused]
            await self._write_copies(pairs, reused, release_lost=True)
        if bad:
            await self._write_failures(bad)
        for outcome in batch:
            self.inflight.pop(outcome.job.product_id, None)
        self.ctx.heartbeat()
        self.progress.set()

    async def _write_embeddings(self, good: list[Outcome], started: float) -> None:
        flat = np.concatenate([o.vector for o in good if o.vector is not None])
        written = await self.ctx.pool.fetch(
            WRITE_EMBEDDINGS_SQL,
            [o.job.product_id for o in good],
            [o.job.image_url for o in good],
            flat.astype(np.float32, copy=False),
            self.embedder.dim,
            self.run_id,
            self.embedder.manifest.graph_sha256,
            [o.job.sha for o in good],
        )
        seconds = time.monotonic() - started
        discarded = len(good) - len(written)
        ids = {r["product_id"] for r in written}
        for reused in ("", SAME_URL, SAME_BYTES):
            n = sum(1 for o in good if o.reused == reused and o.job.product_id in ids)
            self.ctx.count("reused" if reused else "embedded", reused, n)
        self.ctx.count("discarded", "claim_lost", discarded)
        self.ctx.observe_batch(seconds)
        self.ctx.log.info(
            "batch_embedded",
            count=len(written),
            discarded=discarded,
            in_flight=len(self.inflight) - len(good),
            write_s=round(seconds, 4),
        )

    async def _write_copies(
        self, pairs: list[tuple[Job, int]], reused: str, *, release_lost: bool = False
    ) -> set[int]:
        """Copy each donor's embedding to its job; return the jobs written.

        With `release_lost`, jobs not written (their donor vanished meanwhile, or the claim was
        lost) are released to be tried again from scratch, attempt refunded.
        """
        rows = await self.ctx.pool.fetch(
            WRITE_COPIES_SQL,
            [j.product_id for j, _ in pairs],
            [j.image_url for j, _ in pairs],
            [donor for _, donor in pairs],
            [j.sha for j, _ in pairs],
            self.run_id,
        )
        copied = {r["product_id"] for r in rows}
        self.ctx.count("reused", reused, len(copied))
        lost = [j.product_id for j, _ in pairs if j.product_id not in copied]
        if lost and release_lost:
            await release(self.ctx.pool, [self.run_id], lost, refund=1)
            self.ctx.count("discarded", "donor_gone", len(lost))
        if copied:
            self.ctx.heartbeat()
            self.ctx.log.info("embeddings_reused", count=len(copied), reused=reused)
        return copied

    async def _write_failures(self, bad: list[Outcome]) -> None:
        cfg = self.ctx.config.vectorizer
        kinds = [retry_kind(o.reason) for o in bad]
        retry = [
            None
            if kind is None
            else backoff_seconds(
                o.job.transient_failures + 1
                if kind == "transient"
                else o.job.attempts - o.job.transient_failures,
                cfg.retry_backoff_s,
                cfg.retry_backoff_max_s,
                self.rng,
            )
            for o, kind in zip(bad, kinds, strict=True)
        ]
        rows = await self.ctx.pool.fetch(
            WRITE_FAILURES_SQL,
            [o.job.product_id for o in bad],
            [o.job.image_url for o in bad],
            [o.reason for o in bad],
            [_clean(o.detail) for o in bad],
            retry,
            cfg.max_attempts,
            self.run_id,
            [k or "final" for k in kinds],
            [o.job.sha for o in bad],
        )
        written = {r["product_id"]: r for r in rows}
        for outcome, retry_s in zip(bad, retry, strict=True):
            row = written.get(outcome.job.product_id)
            if row is None:
                self.ctx.count("discarded", "claim_lost")
                continue
            self.ctx.count("failed", outcome.reason)
            self.ctx.log.warning(
                "image_failed",
                product_id=outcome.job.product_id,
                reason=outcome.reason,
                detail=outcome.detail[:300],
                attempts=row["attempts"],
                transient_failures=row["transient_failures"],
                final=row["final"],
                retry_in_s=None if row["final"] or retry_s is None else round(retry_s, 1),
            )


def _clean(text: str) -> str:
    """Detail text PostgreSQL accepts: no NUL, not unbounded."""
    return text.replace("\x00", "")[:1000]
