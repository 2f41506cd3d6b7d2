"""Claiming: rank the queue, claim due rows under a lease, reuse known URLs, dispatch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from dahell.stages.vectorizer.jobs import SAME_URL, Job, Outcome
from dahell.stages.vectorizer.leases import RENEW_SQL, SWEEP_SQL
from dahell.stages.vectorizer.writes import WriteSteps

#: Longest single wait, so that heartbeats and lease renewals keep their pace.
TICK_S = 2.0

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

#: For each URL, a done job of the current model with that image URL, and its bytes' hash.
DONORS_BY_URL_SQL = """
SELECT DISTINCT ON (u.url) u.url, d.product_id AS donor, d.image_sha256
FROM unnest($1::text[]) AS u(url)
JOIN product_embeddings AS e ON e.image_url = u.url AND e.model_sha256 = $2
JOIN embedding_jobs AS d
  ON d.product_id = e.product_id AND d.state = 'done' AND d.image_url = e.image_url
ORDER BY u.url, e.processed_at DESC
"""

WORK_REMAINS_SQL = """
SELECT EXISTS (
    SELECT 1 FROM embedding_jobs
    WHERE state IN ('pending', 'claimed')
       OR (state = 'failed' AND next_attempt_at <= now() AND attempts - transient_failures < $1)
)
"""


class ClaimSteps(WriteSteps):
    """The claimer: finds work in `embedding_jobs` and feeds the downloaders."""

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
