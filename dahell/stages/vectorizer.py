"""The vectorizer stage: product images -> SigLIP embeddings in `product_embeddings`.

Work lives in `embedding_jobs` (invariant 3); a nudge from the loader only says "look now", and
the stage also looks every `vectorizer.poll_interval_s`. One run of the stage is a pipeline of
steps joined by bounded queues, so that the model never waits on the network:

    claimer --download_q--> downloaders (aiohttp, download_concurrency) + preprocess threads
            --infer_q--> one inference thread (batch_size) --write_q--> writer (one statement
            per batch) --> PostgreSQL

Rules for a row of `embedding_jobs` (the SQL below is the whole truth):

- **Claim**: a short transaction of its own picks rows that are not done and whose
  `next_attempt_at` is due, useful first (`priority_at`, see `CLAIM_SQL`), `FOR UPDATE SKIP
  LOCKED`, below `max_attempts` (claims not ended by a transient failure); it sets
  `state='claimed'`, `claimed_by` (hostname:pid:run-uuid), `attempts + 1` and a lease:
  `lease_until = next_attempt_at = now() + lease_s`. A claimed row whose lease ran out is thus due
  again and is reclaimed by any worker (expired leases and due retries are one index scan). No
  transaction is held across downloads; leases of work still in flight are renewed every
  `lease_s / 3`.
- **Write**: the embedding is upserted and the job marked done in ONE statement per batch, only
  where the job is still claimed by this run AND its `image_url` is the one downloaded. A job
  reclaimed by another worker or whose image changed meanwhile is left alone (counted
  `discarded`); the loader's reset makes it pending again.
- **Reuse** (`vectorizer.dedup_images`, default on): identical photos are embedded once. After
  a claim, jobs whose `image_url` has an embedding from the current model (another product's done
  job with that URL) get a copy of that vector without a download (`reused`, `same_url`); jobs of
  this run with the same URL share one download. After a download, the bytes' sha256 is stored in
  `embedding_jobs.image_sha256` (for every downloaded job: embedded, reused or refused) and a done
  job with the same hash and model lends its vector (`reused`, `same_bytes`); images of this run
  with the same bytes share one inference. Copies are written by PostgreSQL from the donor's row
  (the vector never travels); a donor that vanished meanwhile releases the job (`discarded`,
  `donor_gone`).
- **Fail**: `state='failed'` with `reason` and `detail`. Transient failures (timeout,
  connection_error, http_5xx, http_408, http_429) are retried without limit after
  `retry_backoff_s * 2**(transient_failures-1)`, capped at `retry_backoff_max_s` (6 h by
  default), times a jitter in [0.8, 1.2]: a CDN outage of any length ends in retries, and
  `dahell status` shows how many wait and why. `transient_failures` counts them (the loader's new
  URL resets it); they never count toward `max_attempts`. `internal_error` (a dahell bug) is
  retried with the same backoff while `attempts - transient_failures < max_attempts`. The image's
  own faults (other 4xx such as 404/410, not_an_image, decode_error, too_large, too_many_pixels,
  host/scheme refused, invalid_url, no_image) fail for good at once: retrying a deterministic
  answer only costs traffic. "For good" is `next_attempt_at = 'infinity'`. A new image URL makes
  the loader reset the row (pending, attempts 0, next_attempt_at now()); to retry failures by
  hand: `UPDATE embedding_jobs SET state='pending', attempts=0, next_attempt_at=now() WHERE ...`.
- **Lost workers**: `vectorizer.max_attempts` bounds the claims that end without a transient
  failure: a row whose `attempts - transient_failures` reached `max_attempts` and whose last
  lease also expired is failed for good with `lease_expired` (an image that kills its worker must
  not kill every worker).
  When the stage is restarted in the same process it releases the claims of its previous run at
  once; on a graceful stop it releases what it did not finish (attempt refunded). A cancelled or
  killed worker releases nothing: its leases expire.
- **Idle**: a claim that finds nothing while nothing is in flight sets the stage idle; with
  `exit_when_idle`, the stage returns once no row is pending, claimed (by anyone) or failed with
  a retry due. Rows waiting for a future retry are not work.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from dahell.embedder import Embedder, ImageRejected, preprocess
from dahell.errors import ModelMismatch
from dahell.fetch import FetchFailed, FetchLimits, ImageFetcher, make_session
from dahell.stages.base import Context

__all__ = [
    "VectorizerStage",
    "backoff_seconds",
    "embedding_column_dimension",
    "ensure_embedding_dimension",
    "worker_id",
]

Vector = npt.NDArray[np.float32]

#: Advisory lock serialising column resizes between dahell processes ("dahell-v").
RESIZE_LOCK_KEY = 0x6461_6865_6C6C_76
#: How long a graceful stop lets in-flight images finish before dropping them.
DRAIN_S = 5.0
#: How long inference waits for a fuller batch once it has one image.
LINGER_S = 0.05
#: How long the writer waits for more outcomes before writing a partial batch.
WRITE_LINGER_S = 0.1
#: Longest single wait, so that heartbeats and lease renewals keep their pace.
TICK_S = 2.0
#: Failures that may go away by themselves: retried with a capped backoff, without limit.
TRANSIENT_REASONS = frozenset({"timeout", "connection_error"})
#: Failures retried with backoff, but only while attempts allow (a bug is rarely fixed by time).
LIMITED_REASONS = frozenset({"internal_error"})
#: Results of this run kept to lend to later jobs with the same URL or bytes (~5 MB at 1152-d).
RECENT_RESULTS = 1024
#: Copies of embeddings written without inference, by why they could be reused.
SAME_URL, SAME_BYTES = "same_url", "same_bytes"

COLUMN_TYPE_SQL = """
SELECT format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = 'product_embeddings'::regclass
  AND a.attname = 'embedding_visual' AND NOT a.attisdropped
"""

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

#: Pending rows the trigger of sql/005_embedding_reuse_priority.sql left unranked (NULL: just
#: queued, released or re-queued) get `priority_at = next_attempt_at - bonus` here, in batches,
#: before each claim (the loader's transaction pays nothing for it). Bonus: in stock 12 h +
#: captured within a day 6 h + no embedding yet 6 h, at most 24 h (`embedding_priority_bonus`).
RANK_SQL = """
WITH todo AS (
    SELECT product_id FROM embedding_jobs
    WHERE priority_at IS NULL AND state <> 'done'
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE embedding_jobs AS j
SET priority_at = j.next_attempt_at - embedding_priority_bonus(j.product_id)
FROM todo
WHERE j.product_id = todo.product_id AND j.priority_at IS NULL
"""
#: Rows ranked per statement (the loop goes on until none is left).
RANK_BATCH = 2000

#: The claim order, "useful first": by `priority_at`, which is `next_attempt_at - bonus` for
#: pending rows (see RANK_SQL; a NULL, unranked row is never claimed) and `next_attempt_at` for
#: every other state (the trigger keeps it). So products in stock and recently changed go
#: before stale and empty ones, new products before re-embeds, and nothing starves: a job that
#: has waited longer than the largest bonus goes before anything queued after it. Because the
#: bonus is never negative, `next_attempt_at <= now()` implies `priority_at <= now()`: the scan
#: walks embedding_jobs_priority_idx from its start up to now() (claimed and retrying rows sort
#: after now(), so the filter skips almost nothing), FOR UPDATE SKIP LOCKED.
CLAIM_SQL = """
WITH picked AS (
    SELECT product_id FROM embedding_jobs
    WHERE state <> 'done' AND priority_at <= now() AND next_attempt_at <= now()
      AND attempts - transient_failures < $3
      AND (state <> 'claimed' OR lease_until < now())
    ORDER BY priority_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE embedding_jobs AS j
SET state = 'claimed', claimed_by = $2, attempts = j.attempts + 1,
    lease_until = now() + make_interval(secs => $4),
    next_attempt_at = now() + make_interval(secs => $4),
    updated_at = now()
FROM picked
WHERE j.product_id = picked.product_id
RETURNING j.product_id, j.image_url, j.attempts, j.transient_failures
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
    RETURNING j.product_id
)
INSERT INTO product_embeddings AS e
    (product_id, embedding_visual, image_url, model_sha256, processed_at)
SELECT i.product_id, i.embedding, i.image_url, $6, now()
FROM input AS i JOIN done USING (product_id)
ON CONFLICT (product_id) DO UPDATE
SET embedding_visual = EXCLUDED.embedding_visual, image_url = EXCLUDED.image_url,
    model_sha256 = EXCLUDED.model_sha256, processed_at = EXCLUDED.processed_at
RETURNING e.product_id
"""

#: For each hash, a done job of the current model whose image has these bytes (its embedding
#: can be copied). One statement for all the images downloaded meanwhile (see `_lookup_loop`).
DONORS_BY_BYTES_SQL = """
SELECT DISTINCT ON (d.image_sha256) d.image_sha256, d.product_id AS donor
FROM embedding_jobs AS d
JOIN product_embeddings AS e ON e.product_id = d.product_id AND e.image_url = d.image_url
WHERE d.image_sha256 = ANY($1::bytea[]) AND d.state = 'done' AND e.model_sha256 = $2
ORDER BY d.image_sha256, e.processed_at DESC
"""
#: How long a byte lookup waits for others to share its statement.
LOOKUP_LINGER_S = 0.01
#: Bodies up to this size are hashed on the event loop (a thread hop costs more).
INLINE_HASH_BYTES = 256 * 1024

#: For each URL, a done job of the current model with that image URL, and its bytes' hash.
DONORS_BY_URL_SQL = """
SELECT DISTINCT ON (u.url) u.url, d.product_id AS donor, d.image_sha256
FROM unnest($1::text[]) AS u(url)
JOIN product_embeddings AS e ON e.image_url = u.url AND e.model_sha256 = $2
JOIN embedding_jobs AS d
  ON d.product_id = e.product_id AND d.state = 'done' AND d.image_url = e.image_url
ORDER BY u.url, e.processed_at DESC
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
    RETURNING j.product_id
)
INSERT INTO product_embeddings AS e
    (product_id, embedding_visual, image_url, model_sha256, processed_at)
SELECT s.product_id, s.embedding_visual, s.image_url, s.model_sha256, now()
FROM src AS s JOIN done USING (product_id)
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

WORK_REMAINS_SQL = """
SELECT EXISTS (
    SELECT 1 FROM embedding_jobs
    WHERE state IN ('pending', 'claimed')
       OR (state = 'failed' AND next_attempt_at <= now() AND attempts - transient_failures < $1)
)
"""


def worker_id() -> str:
    """`hostname:pid:run` — names the claims of one run of the stage in one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


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


# --- the embedding column ------------------------------------------------------------------


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


# --- the stage -----------------------------------------------------------------------------


class VectorizerStage:
    """Claims pending images, embeds them, writes vectors; see the module doc for the rules."""

    name = "vectorizer"

    def __init__(self) -> None:
        self._embedder: Embedder | None = None
        self._embedder_key: tuple[str, tuple[str, ...]] | None = None
        self._past_runs: list[str] = []

    async def run(self, ctx: Context) -> None:
        embedder = await self._load_model(ctx)
        await ensure_embedding_dimension(ctx.pool, embedder.dim, ctx.log)
        run_id = worker_id()
        if self._past_runs:
            await _release(ctx.pool, self._past_runs, None, refund=0)
        self._past_runs.append(run_id)
        await _Run(ctx, embedder, run_id).run()

    async def _load_model(self, ctx: Context) -> Embedder:
        cfg = ctx.config.vectorizer
        key = (cfg.model_dir, tuple(cfg.providers))
        if self._embedder is not None and self._embedder_key == key:
            return self._embedder
        started = time.monotonic()
        embedder = await asyncio.to_thread(Embedder.load, Path(cfg.model_dir), cfg.providers)
        self._embedder, self._embedder_key = embedder, key
        ctx.log.info(
            "model_loaded",
            model_dir=cfg.model_dir,
            dim=embedder.dim,
            image_size=embedder.manifest.image_size,
            precision=embedder.manifest.precision,
            providers=embedder.providers,
            load_s=round(time.monotonic() - started, 3),
            model_sha256=embedder.manifest.graph_sha256,
            source_model=embedder.manifest.source_model,
        )
        return embedder


@dataclass(slots=True, eq=False)
class Job:
    product_id: int
    image_url: str | None
    attempts: int
    transient_failures: int = 0
    sha: bytes | None = None  # sha256 of the downloaded bytes, once known


@dataclass(slots=True)
class Outcome:
    """How one job ended in this run: a vector, a donor's vector to copy, or a failure reason.

    `reused` names why no inference ran for it (`same_url`, `same_bytes`), "" when it did.
    """

    job: Job
    vector: Vector | None = None
    donor: int | None = None
    reason: str = ""
    detail: str = ""
    reused: str = ""


@dataclass(slots=True, eq=False)
class _Group:
    """Jobs of this run waiting for the outcome of one leader with the same URL or bytes."""

    leader: Job
    kind: str  # SAME_URL or SAME_BYTES
    followers: list[Job] = field(default_factory=list)


def _follower_outcome(outcome: Outcome, job: Job, kind: str) -> Outcome:
    """The outcome a follower takes from its leader's: the same vector, donor or failure."""
    job.sha = job.sha or outcome.job.sha
    if outcome.vector is None and outcome.donor is None:
        return Outcome(job, reason=outcome.reason, detail=outcome.detail)
    return Outcome(job, vector=outcome.vector, donor=outcome.donor, reused=kind)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Run:
    """One run of the pipeline (a fresh one after each restart of the stage)."""

    def __init__(self, ctx: Context, embedder: Embedder, run_id: str) -> None:
        cfg = ctx.config.vectorizer
        self.ctx = ctx
        self.embedder = embedder
        self.run_id = run_id
        self.rng = random.Random()
        self.inflight: dict[int, Job] = {}
        self.dropped: set[int] = set()
        self.progress = asyncio.Event()
        self.download_q: asyncio.Queue[Job] = asyncio.Queue()
        self.infer_q: asyncio.Queue[tuple[Job, Vector]] = asyncio.Queue(2 * cfg.batch_size)
        self.write_q: asyncio.Queue[Outcome] = asyncio.Queue()
        self.prep_pool = ThreadPoolExecutor(cfg.preprocess_threads, "vectorizer-prep")
        self.model_pool = ThreadPoolExecutor(1, "vectorizer-model")
        self.capacity = max(2 * cfg.claim_batch_size, cfg.download_concurrency + 2 * cfg.batch_size)
        self._writing = False
        self.by_url: dict[str, _Group] = {}
        self.by_sha: dict[bytes, _Group] = {}
        # Results of this run by URL and by bytes, kept for a while after the leader's outcome
        # (its write may not have committed yet, so the database cannot lend it).
        self.recent: OrderedDict[str | bytes, Outcome] = OrderedDict()
        self.lookups: list[tuple[bytes, asyncio.Future[int | None]]] = []
        self.lookup_wake = asyncio.Event()

    # -- orchestration

    async def run(self) -> None:
        cfg = self.ctx.config.vectorizer
        limits = FetchLimits.build(
            cfg.download_timeout_s, cfg.max_image_bytes, cfg.max_redirects, cfg.allowed_image_hosts
        )
        session = make_session(cfg.download_concurrency, cfg.connect_timeout_s)
        fetcher = ImageFetcher(session, limits)
        workers = [asyncio.create_task(self._lookup_loop())]
        workers += [
            asyncio.create_task(self._download_loop(fetcher))
            for _ in range(cfg.download_concurrency)
        ]
        workers += [
            asyncio.create_task(self._inference_loop()),
            asyncio.create_task(self._write_loop()),
        ]
        claimer = asyncio.create_task(self._claim_loop())
        try:
            done, _ = await asyncio.wait([claimer, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a crashed step crashes the stage (leases expire)
            if self.ctx.stopping.is_set():
                await self._drain(workers)
        finally:
            for task in [claimer, *workers]:
                task.cancel()
            await asyncio.gather(claimer, *workers, return_exceptions=True)
            await session.close()
            self.prep_pool.shutdown(wait=False, cancel_futures=True)
            self.model_pool.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, workers: list[asyncio.Task[None]]) -> None:
        """Graceful stop: finish what is in flight for a few seconds, release the rest."""
        await self._wait_until(lambda: self.inflight.keys() <= self.dropped, DRAIN_S, workers)
        for task in workers[:-1]:  # downloaders and inference; the writer flushes what is done
            task.cancel()
        await self._wait_until(lambda: self.write_q.empty() and not self._writing, 2.0, workers)
        left = [pid for pid in self.inflight]
        if left:
            released = await asyncio.wait_for(
                _release(self.ctx.pool, [self.run_id], left, refund=1), timeout=2.0
            )
            self.ctx.log.info("claims_released", count=released, reason="stopping")

    async def _wait_until(
        self, done: Callable[[], bool], timeout: float, workers: Sequence[asyncio.Task[None]]
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done() and (left := deadline - time.monotonic()) > 0:
            self.progress.clear()
            waiter = asyncio.create_task(self.progress.wait())
            await asyncio.wait(
                [waiter, *workers], timeout=min(left, 0.5), return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            for task in workers:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    return

    # -- claiming

    async def _claim_loop(self) -> None:
        cfg = self.ctx.config.vectorizer
        next_sweep = 0.0
        next_renew = time.monotonic() + cfg.lease_s / 3
        while not self.ctx.stopping.is_set():
            cfg = self.ctx.config.vectorizer
            if time.monotonic() >= next_renew:
                await self._renew()
                next_renew = time.monotonic() + cfg.lease_s / 3
            room = self.capacity - len(self.inflight)
            if room < min(cfg.claim_batch_size, self.capacity) // 2 and self.inflight:
                await self._wait(TICK_S, for_work=False)
                continue
            if time.monotonic() >= next_sweep:
                await self._sweep()
                next_sweep = time.monotonic() + cfg.poll_interval_s
            wanted = min(room, cfg.claim_batch_size)
            await self._rank()
            jobs = await self._claim(wanted)
            if jobs:
                self.ctx.set_idle(False)
                self._dispatch(await self._reuse_known_urls(jobs))
                if len(jobs) == wanted:
                    continue
            elif not self.inflight:
                self.ctx.set_idle(True)
                if self.ctx.exit_when_idle:
                    await self._sweep()
                    if not await self._work_remains():
                        return
            await self._wait(cfg.poll_interval_s, for_work=True)

    async def _claim(self, n: int) -> list[Job]:
        cfg = self.ctx.config.vectorizer
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_SQL, n, self.run_id, cfg.max_attempts, cfg.lease_s)
        jobs = [
            Job(r["product_id"], r["image_url"], r["attempts"], r["transient_failures"])
            for r in rows
        ]
        if jobs:
            self.ctx.log.debug("jobs_claimed", count=len(jobs), worker=self.run_id)
        return jobs

    async def _rank(self) -> None:
        """Give every unranked pending row its priority, so the claim sees the whole queue."""
        while True:
            status = await self.ctx.pool.execute(RANK_SQL, RANK_BATCH)
            if int(status.split()[-1]) < RANK_BATCH:
                return
            self.ctx.heartbeat()

    async def _sweep(self) -> None:
        status = await self.ctx.pool.execute(SWEEP_SQL, self.ctx.config.vectorizer.max_attempts)
        swept = int(status.split()[-1])
        if swept:
            self.ctx.count("failed", "lease_expired", swept)
            self.ctx.log.warning("image_failed", reason="lease_expired", count=swept)

    async def _renew(self) -> None:
        ids = [pid for pid in self.inflight if pid not in self.dropped]
        if ids:
            lease = self.ctx.config.vectorizer.lease_s
            await self.ctx.pool.execute(RENEW_SQL, ids, self.run_id, lease)

    async def _work_remains(self) -> bool:
        limit = self.ctx.config.vectorizer.max_attempts
        return bool(await self.ctx.pool.fetchval(WORK_REMAINS_SQL, limit))

    def _dispatch(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.inflight[job.product_id] = job
            if not job.image_url:
                self._emit(Outcome(job, reason="no_image", detail="no image URL"))
            elif (known := self._recent(job.image_url, job, SAME_URL)) is not None:
                self._emit(known)
            elif not self._follow(self.by_url, job.image_url, job, SAME_URL):
                self.download_q.put_nowait(job)

    # -- reuse: identical photos are embedded once

    @property
    def _dedup(self) -> bool:
        return self.ctx.config.vectorizer.dedup_images

    def _follow(self, groups: dict[Any, _Group], key: Any, job: Job, kind: str) -> bool:
        """Attach `job` to the group in flight for `key` (True), or make it the leader (False)."""
        if not self._dedup:
            return False
        group = groups.get(key)
        if group is None:
            groups[key] = _Group(job, kind)
            return False
        group.followers.append(job)
        return True

    def _recent(self, key: str | bytes, job: Job, kind: str) -> Outcome | None:
        """A copy of a recent result for the same URL or bytes, for `job`; None if none."""
        if not self._dedup or key not in self.recent:
            return None
        self.recent.move_to_end(key)
        return _follower_outcome(self.recent[key], job, kind)

    def _remember(self, outcome: Outcome) -> None:
        if outcome.vector is None and outcome.donor is None:
            return  # failures are not lent: a retry may succeed
        for key in (outcome.job.image_url, outcome.job.sha):
            if key is not None:
                self.recent[key] = outcome
                self.recent.move_to_end(key)
        while len(self.recent) > RECENT_RESULTS:
            self.recent.popitem(last=False)

    def _emit(self, outcome: Outcome) -> None:
        """Queue `outcome` for the writer, and its followers' outcomes with it."""
        self.write_q.put_nowait(outcome)
        if self._dedup:
            self._remember(outcome)
        for group in self._groups_led_by(outcome.job):
            for follower in group.followers:
                self._emit(_follower_outcome(outcome, follower, group.kind))

    def _drop(self, job: Job) -> None:
        """Stopping: `job` (and whoever waits on it) will not be finished in this run."""
        self.dropped.add(job.product_id)
        for group in self._groups_led_by(job):
            for follower in group.followers:
                self._drop(follower)

    def _groups_led_by(self, job: Job) -> list[_Group]:
        """Remove and return the groups `job` leads (its URL's, its bytes')."""
        led = []
        if job.image_url is not None and (g := self.by_url.get(job.image_url)) and g.leader is job:
            led.append(self.by_url.pop(job.image_url))
        if job.sha is not None and (g := self.by_sha.get(job.sha)) and g.leader is job:
            led.append(self.by_sha.pop(job.sha))
        return led

    async def _reuse_known_urls(self, jobs: list[Job]) -> list[Job]:
        """Copy embeddings already made from the same URL; return the jobs still to download."""
        urls = sorted({j.image_url for j in jobs if j.image_url})
        if not self._dedup or not urls:
            return jobs
        sha = self.embedder.manifest.graph_sha256
        rows = await self.ctx.pool.fetch(DONORS_BY_URL_SQL, urls, sha)
        donors = {r["url"]: (r["donor"], r["image_sha256"]) for r in rows}
        reuse = [j for j in jobs if j.image_url in donors]
        if not reuse:
            return jobs
        for job in reuse:
            job.sha = donors[job.image_url or ""][1]
        copied = await self._write_copies(
            [(j, donors[j.image_url or ""][0]) for j in reuse], SAME_URL
        )
        return [j for j in jobs if j.product_id not in copied]

    async def _wait(self, timeout: float, *, for_work: bool) -> None:
        """Wait for a nudge (when looking for work), finished work, shutdown or `timeout`."""
        self.progress.clear()
        waiters: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.ctx.stopping.wait()),
            asyncio.create_task(self.progress.wait()),
        ]
        inbox = self.ctx.inbox
        if for_work and inbox is not None:
            waiters.append(asyncio.create_task(inbox.get()))
        try:
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not self.inflight:
                    self.ctx.heartbeat()  # waiting for work is alive; stuck work is not
                done, _ = await asyncio.wait(
                    waiters, timeout=min(left, TICK_S), return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    break
        finally:
            for waiter in waiters:
                waiter.cancel()
        while inbox is not None and not inbox.empty():
            inbox.get_nowait()  # nudges are all alike: one look serves them all

    # -- download and preprocess

    async def _download_loop(self, fetcher: ImageFetcher) -> None:
        while True:
            job = await self.download_q.get()
            if self.ctx.stopping.is_set():
                self._drop(job)
                self.progress.set()
                continue
            async with self.ctx.working():
                outcome = await self._prepare(fetcher, job)
                if outcome is not None:
                    self._emit(outcome)

    async def _prepare(self, fetcher: ImageFetcher, job: Job) -> Outcome | None:
        """Download, hash and preprocess one image.

        Returns its outcome (a failure, or a donor's vector to copy), or None once the image is
        queued for inference or waits on another job of this run with the same bytes.
        """
        assert job.image_url
        max_pixels = self.ctx.config.vectorizer.max_image_pixels
        loop = asyncio.get_running_loop()
        try:
            data = await fetcher.fetch(job.image_url)
            job.sha = (
                _digest(data)
                if len(data) <= INLINE_HASH_BYTES
                else await loop.run_in_executor(self.prep_pool, _digest, data)
            )
            if (known := self._recent(job.sha, job, SAME_BYTES)) is not None:
                return known
            if self._follow(self.by_sha, job.sha, job, SAME_BYTES):
                return None
            if self._dedup:
                donor = await self._donor_for(job.sha)
                if donor is not None:
                    return Outcome(job, donor=donor, reused=SAME_BYTES)
            pixels = await loop.run_in_executor(
                self.prep_pool, preprocess, data, self.embedder.manifest, max_pixels
            )
        except (FetchFailed, ImageRejected) as exc:
            return Outcome(job, reason=exc.reason, detail=exc.detail)
        except Exception as exc:  # a bug must cost one image, not the stage
            self.ctx.log.exception("image_internal_error", product_id=job.product_id)
            return Outcome(job, reason="internal_error", detail=f"{type(exc).__name__}: {exc}")
        await self.infer_q.put((job, pixels))
        return None

    async def _donor_for(self, sha: bytes) -> int | None:
        """A done product whose image has these bytes, asked together with others in flight."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.lookups.append((sha, future))
        self.lookup_wake.set()
        return await future

    async def _lookup_loop(self) -> None:
        """Answer the byte lookups of all downloads in flight with one statement at a time."""
        while True:
            await self.lookup_wake.wait()
            await asyncio.sleep(LOOKUP_LINGER_S)
            self.lookup_wake.clear()
            batch, self.lookups = self.lookups, []
            if not batch:
                continue
            try:
                rows = await self.ctx.pool.fetch(
                    DONORS_BY_BYTES_SQL,
                    list({sha for sha, _ in batch}),
                    self.embedder.manifest.graph_sha256,
                )
            except Exception as exc:  # each image's own _prepare decides what it costs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            donors = {bytes(r["image_sha256"]): r["donor"] for r in rows}
            for sha, future in batch:
                if not future.done():
                    future.set_result(donors.get(sha))

    # -- inference

    async def _inference_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            async with self.ctx.working():
                pixels = np.stack([p for _, p in batch])
                vectors = await loop.run_in_executor(self.model_pool, self.embedder.embed, pixels)
            for (job, _), vector in zip(batch, vectors, strict=True):
                self._emit(Outcome(job, vector=vector))

    async def _next_batch(self) -> list[tuple[Job, Vector]]:
        size = self.ctx.config.vectorizer.batch_size
        batch = [await self.infer_q.get()]
        deadline = time.monotonic() + LINGER_S
        while len(batch) < size:
            if not self.infer_q.empty():
                batch.append(self.infer_q.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0 or self.ctx.stopping.is_set():
                break
            try:
                batch.append(await asyncio.wait_for(self.infer_q.get(), left))
            except TimeoutError:
                break
        return batch

    # -- writing

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
            await _release(self.ctx.pool, [self.run_id], lost, refund=1)
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


async def _release(pool: asyncpg.Pool, runs: list[str], ids: list[int] | None, refund: int) -> int:
    """Give claims back (pending, due now); `refund` 1 returns the attempt they cost."""
    status = await pool.execute(RELEASE_SQL, runs, ids, refund)
    return int(status.split()[-1])


def _clean(text: str) -> str:
    """Detail text PostgreSQL accepts: no NUL, not unbounded."""
    return text.replace("\x00", "")[:1000]
