"""One run of the pipeline: its steps started together, and drained on a graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from dahell.fetch import FetchLimits, ImageFetcher, make_session
from dahell.stages.vectorizer.claims import ClaimSteps
from dahell.stages.vectorizer.downloads import DownloadSteps
from dahell.stages.vectorizer.inference import InferenceSteps
from dahell.stages.vectorizer.leases import release

#: How long a graceful stop lets in-flight images finish before dropping them.
DRAIN_S = 5.0


class Run(ClaimSteps, DownloadSteps, InferenceSteps):
    """One run of the pipeline (a fresh one after each restart of the stage)."""

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
                release(self.ctx.pool, [self.run_id], left, refund=1), timeout=2.0
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
