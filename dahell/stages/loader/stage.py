"""The loader stage: replays the journal at start-up, then loads the scraper's batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dahell.journal import journal_files
from dahell.stages.base import Context, EmbedNudge, JournalBatch
from dahell.stages.loader.files import Loader, relax_gc
from dahell.stages.loader.retention import apply_retention
from dahell.stages.loader.stats import LOADED, FileReport, LoadStats
from dahell.stages.loader.writer import SourceBusy


class LoaderStage:
    """Replays the journal past its checkpoint, then loads the scraper's batches as they come."""

    name = "loader"
    RESCAN_INTERVAL_S = 60.0
    RETENTION_INTERVAL_S = 3600.0

    def __init__(self) -> None:
        # A batch of another file met while gathering: it opens the next gathering, in order.
        self._carry: JournalBatch | None = None

    async def run(self, ctx: Context) -> None:
        relax_gc()
        loader = Loader(
            ctx.pool,
            lambda: ctx.config,
            ctx.log,
            on_batch=self._reporter(ctx),
            should_stop=ctx.stopping.is_set,
        )
        try:
            await self._serve(ctx, loader)
        finally:
            await loader.close()

    async def _serve(self, ctx: Context, loader: Loader) -> None:
        await self._replay(ctx, loader)
        last_scan = last_retention = time.monotonic()
        await self._retention(ctx)
        while True:
            pending = await self._collect(ctx)
            if pending:
                async with ctx.working():
                    await self._load(ctx, loader, pending)
                continue
            if ctx.stopping.is_set():
                return
            now = time.monotonic()
            if now - last_scan >= self.RESCAN_INTERVAL_S:
                last_scan = now
                await self._replay(ctx, loader)
            if now - last_retention >= self.RETENTION_INTERVAL_S:
                last_retention = now
                await self._retention(ctx)
            ctx.set_idle(True)

    def _reporter(self, ctx: Context) -> Callable[[LoadStats, float], None]:
        def report(stats: LoadStats, seconds: float) -> None:
            for outcome in LOADED:
                ctx.count(outcome, n=getattr(stats, outcome))
            for reason, n in stats.rejected_by_reason.items():
                ctx.count("rejected", reason, n)
            ctx.observe_batch(seconds)
            if stats.pending_embeddings:
                ctx.nudge("vectorizer", EmbedNudge(stats.pending_embeddings))
            ctx.heartbeat()

        return report

    async def _replay(self, ctx: Context, loader: Loader) -> None:
        for path in journal_files(ctx.config.journal_dir):
            if ctx.stopping.is_set():
                return
            async with ctx.working():
                ctx.set_idle(False)
                report = await self._load_file(ctx, loader, path)
            if report.stats.lines:
                ctx.log.info("journal_replayed", path=str(path), **report.stats.as_dict())

    async def _load_file(self, ctx: Context, loader: Loader, path: Path) -> FileReport:
        for attempt in range(3):
            try:
                report = await loader.load_path(path, live=True)
            except SourceBusy as exc:
                ctx.log.warning("source_busy", path=str(path), detail=str(exc), attempt=attempt)
                await asyncio.sleep(0.5)
                continue
            if report.status == "error":
                ctx.log.error("journal_unreadable", path=str(path), detail=report.message)
            return report
        return FileReport(str(path), status="busy")

    async def _collect(self, ctx: Context) -> list[JournalBatch]:
        """Wait for batches; gather contiguous ones of one file up to the size or time limit."""
        first: Any = self._carry or await ctx.receive(timeout=1.0)
        self._carry = None
        if first is None:
            return []
        ctx.set_idle(False)
        if not isinstance(first, JournalBatch):
            return []
        pending = [first]
        lines = len(first.lines)
        deadline = time.monotonic() + ctx.config.loader.batch_max_wait_s
        while lines < ctx.config.loader.batch_size and ctx.inbox is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                nxt = await asyncio.wait_for(ctx.inbox.get(), timeout=left)
            except TimeoutError:
                break
            if not isinstance(nxt, JournalBatch):
                continue
            if nxt.path != pending[-1].path:
                self._carry = nxt
                break
            pending.append(nxt)
            lines += len(nxt.lines)
        return pending

    async def _load(self, ctx: Context, loader: Loader, batches: list[JournalBatch]) -> None:
        try:
            await loader.load_batches(batches)
        except SourceBusy as exc:
            ctx.log.warning("source_busy", path=str(batches[0].path), detail=str(exc))
            await self._load_file(ctx, loader, batches[0].path)

    async def _retention(self, ctx: Context) -> None:
        done = await apply_retention(ctx.pool, ctx.config, ctx.log)
        if any(done.values()):
            ctx.log.info("journal_retention", **done)
