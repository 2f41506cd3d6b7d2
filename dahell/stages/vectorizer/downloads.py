"""Downloading: fetch, hash and preprocess each image; look up donors by the bytes' hash."""

from __future__ import annotations

import asyncio
import hashlib

from dahell.embedder import ImageRejected, preprocess
from dahell.fetch import FetchFailed, ImageFetcher
from dahell.stages.vectorizer.jobs import SAME_BYTES, Job, Outcome, RunState

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


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class DownloadSteps(RunState):
    """The downloaders (`download_concurrency` of them) and the one byte-lookup loop."""

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
        max_bytes = self.ctx.config.vectorizer.max_decoded_bytes
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
                self.prep_pool, preprocess, data, self.embedder.manifest, max_pixels, max_bytes
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
