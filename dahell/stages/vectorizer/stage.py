"""The vectorizer Stage: loads the model once, sizes the column, runs the pipeline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dahell.embedder import Embedder
from dahell.stages.base import Context
from dahell.stages.vectorizer.column import ensure_embedding_dimension
from dahell.stages.vectorizer.leases import release, worker_id
from dahell.stages.vectorizer.run import Run


class VectorizerStage:
    """Claims pending images, embeds them, writes vectors; see the package doc for the rules."""

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
            await release(ctx.pool, self._past_runs, None, refund=0)
        self._past_runs.append(run_id)
        await Run(ctx, embedder, run_id).run()

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
