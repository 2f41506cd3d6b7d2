"""Inference: one thread runs the model on batches of preprocessed images."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from dahell.stages.vectorizer.jobs import Job, Outcome, RunState, Vector

#: How long inference waits for a fuller batch once it has one image.
LINGER_S = 0.05


class InferenceSteps(RunState):
    """Batches of up to `batch_size` images, each embedded in the model's own thread."""

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
