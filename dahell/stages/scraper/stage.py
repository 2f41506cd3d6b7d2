"""The scraper Stage: the pass logic (see the package docstring for the pass and its outcomes).

A pass pages from `next_start` until a short page; each page is fetched through the session,
sorted by its outcome, journaled (fsync) and sent to the loader, and the position saved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from playwright.async_api import Error as PlaywrightError

from dahell import log as dahell_log
from dahell.config import ScraperConfig
from dahell.errors import CredentialsError
from dahell.journal import JournalWriter
from dahell.stages.base import Context, JournalBatch
from dahell.stages.scraper.catalog import PageResult, journal_lines
from dahell.stages.scraper.files import Progress, ScraperFiles
from dahell.stages.scraper.session import BrowserGone, BrowserSession

_MAX_BROWSER_RESTARTS = 5  # in a row, on the same page, before the stage gives up (and restarts)
_MAX_RELOGINS_PER_PAGE = 3


@dataclass
class _Ticker:
    """Spaces requests `interval` apart without drifting: the next tick is the last plus one."""

    next_at: float = 0.0

    async def wait(self, ctx: Context, interval: float) -> bool:
        delay = self.next_at - time.monotonic()
        stopping = await ctx.sleep(delay) if delay > 0 else ctx.stopping.is_set()
        self.next_at = max(self.next_at, time.monotonic()) + interval
        return stopping


@dataclass
class _PassIds:
    current: set[int] = field(default_factory=set)
    previous: set[int] = field(default_factory=set)


_STOP = object()


class ScraperStage:
    """Scrapes the Dropi catalog in passes; resumable at the page where it stopped."""

    name = "scraper"

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        # The capture-time source: the wall clock, or a simulator's clock (`dahell demo`).
        self._clock = clock or (lambda: datetime.now(UTC))
        self._progress: Progress | None = None
        self._ids: _PassIds | None = None
        self._ticker = _Ticker()

    async def run(self, ctx: Context) -> None:
        settings = ctx.config.scraper
        _check_credentials(settings)
        files = ScraperFiles(ctx.config.data_dir / "scraper")
        writer = JournalWriter(ctx.config.journal_dir, ctx.config.journal.fsync)
        session = BrowserSession(ctx, files)
        try:
            await self._loop(ctx, session, files, writer)
        except PlaywrightError as exc:
            raise BrowserGone(dahell_log.redact_text(str(exc))[:500]) from None
        finally:
            await asyncio.shield(session.close())
            writer.close()

    async def _loop(
        self, ctx: Context, session: BrowserSession, files: ScraperFiles, writer: JournalWriter
    ) -> None:
        while not ctx.stopping.is_set():
            progress = await self._current_pass(ctx, files)
            if progress is None:
                return
            if not await self._run_pass(ctx, session, files, writer, progress):
                return
            if ctx.exit_when_idle:
                ctx.set_idle(True)
                return

    async def _current_pass(self, ctx: Context, files: ScraperFiles) -> Progress | None:
        """The pass to work on: the unfinished one, else a new one after `pass_interval_s`."""
        if self._progress is None:
            self._progress = await asyncio.to_thread(files.load_progress)
        if self._ids is None:
            self._ids = _PassIds(
                await asyncio.to_thread(files.load_ids, False),
                await asyncio.to_thread(files.load_ids, True),
            )
        progress = self._progress
        if progress is not None and not progress.finished_at:
            return progress
        if progress is not None and not ctx.exit_when_idle:
            wait = progress.finished_at + ctx.config.scraper.pass_interval_s - time.time()
            if wait > 0 and await ctx.sleep(wait):
                return None
        self._progress = Progress.new_pass()
        self._ids.current = set()
        ctx.log.info("pass_started", pass_id=self._progress.pass_id)
        return self._progress

    async def _run_pass(
        self,
        ctx: Context,
        session: BrowserSession,
        files: ScraperFiles,
        writer: JournalWriter,
        progress: Progress,
    ) -> bool:
        """Page until the catalog ends (True) or shutdown begins (False)."""
        while not ctx.stopping.is_set():
            async with ctx.working():
                result = await self._capture(ctx, session, progress.next_start)
                if result is _STOP:
                    return False
                assert result is None or isinstance(result, PageResult)
                last = await self._record(ctx, files, writer, progress, result)
            if last:
                await self._finish_pass(ctx, files, progress)
                return True
        return False

    async def _capture(self, ctx: Context, session: BrowserSession, start: int) -> object:
        """The page at `start` (a PageResult), None after too many failures, or _STOP."""
        failures = relogins = restarts = 0
        while True:
            settings = ctx.config.scraper
            if await self._ticker.wait(ctx, settings.request_interval_s):
                return _STOP
            try:
                await session.ensure()
                result = await session.fetch(start, settings.page_size)
            except (PlaywrightError, BrowserGone) as exc:
                restarts += 1
                if restarts > _MAX_BROWSER_RESTARTS:
                    raise
                session.mark_broken("crash", dahell_log.redact_text(str(exc)))
                continue
            outcome = result.outcome()
            if outcome == "ok":
                return result
            if outcome == "auth":
                relogins += 1
                if relogins > _MAX_RELOGINS_PER_PAGE:
                    self._page_failed(ctx, start, "auth_refused", result)
                    return None
                ctx.log.info("token_rejected", status=result.status, page_start=start)
                session.needs_login = True
            elif outcome == "rate_limited":
                if await self._rate_limited(ctx, result):
                    return _STOP
            else:
                failures += 1
                if failures > settings.max_page_retries:
                    self._page_failed(ctx, start, outcome, result)
                    return None
                ctx.log.info("page_retry", page_start=start, reason=outcome, attempt=failures)
                if await ctx.sleep(min(30.0, 0.5 * 2 ** (failures - 1))):
                    return _STOP

    async def _rate_limited(self, ctx: Context, result: PageResult) -> bool:
        wait = result.retry_after_s()
        ctx.count("rate_limited")
        ctx.log.warning("rate_limited", retry_after_s=wait, page_start=result.start)
        return await ctx.sleep(wait)

    def _page_failed(self, ctx: Context, start: int, reason: str, result: PageResult) -> None:
        ctx.count("page_errors", reason)
        ctx.log.error(
            "page_failed",
            page_start=start,
            reason=reason,
            status=result.status,
            body=dahell_log.redact_text(result.text[:300]),
        )

    async def _record(
        self,
        ctx: Context,
        files: ScraperFiles,
        writer: JournalWriter,
        progress: Progress,
        result: PageResult | None,
    ) -> bool:
        """Journal and send one page, save the position; True when it was the last page."""
        settings = ctx.config.scraper
        if result is None:
            progress.errors += 1
            progress.next_start += settings.page_size
            await asyncio.to_thread(files.save_progress, progress)
            if settings.mode == "ui":
                # The app cannot skip a page it failed to load: end this pass here.
                ctx.log.error("pass_truncated", page_start=progress.next_start - settings.page_size)
                return True
            return False
        products = result.products() or []
        if products:
            await self._journal_and_send(ctx, writer, progress, result.start, products)
            ids = [
                p["id"] for p in products if isinstance(p, dict) and isinstance(p.get("id"), int)
            ]
            assert self._ids is not None
            self._ids.current.update(ids)
            await asyncio.to_thread(files.append_ids, ids)
        size = result.size or settings.page_size
        progress.pages += 1
        progress.products += len(products)
        progress.next_start = result.start + size
        await asyncio.to_thread(files.save_progress, progress)
        self._publish(ctx, progress)
        ctx.count("pages")
        ctx.count("products", n=len(products))
        ctx.log.debug("page_captured", page_start=result.start, products=len(products))
        return len(products) < size

    async def _journal_and_send(
        self,
        ctx: Context,
        writer: JournalWriter,
        progress: Progress,
        start: int,
        products: list[Any],
    ) -> None:
        captured_at = self._clock()
        lines = journal_lines(products, captured_at, progress.pass_id, start)
        appended = await asyncio.to_thread(writer.append, lines, captured_at)
        batch = JournalBatch(
            appended.path,
            appended.start,
            appended.end,
            tuple(lines),
            captured_at,
            progress.pass_id,
        )
        await ctx.send("loader", batch)

    def _publish(self, ctx: Context, progress: Progress) -> None:
        ctx.status_extra.update(
            pass_id=progress.pass_id,
            next_start=progress.next_start,
            pass_pages=progress.pages,
            pass_products=progress.products,
            pass_errors=progress.errors,
        )

    async def _finish_pass(self, ctx: Context, files: ScraperFiles, progress: Progress) -> None:
        assert self._ids is not None
        ids = self._ids
        progress.finished_at = time.time()
        ctx.log.info(
            "pass_finished",
            pass_id=progress.pass_id,
            pages=progress.pages,
            products=progress.products,
            distinct_products=len(ids.current),
            new_products=len(ids.current - ids.previous),
            duration_s=round(progress.finished_at - progress.started_at, 3),
            errors=progress.errors,
        )
        ctx.count("passes")
        await asyncio.to_thread(files.finish_ids, ids.current)
        await asyncio.to_thread(files.save_progress, progress)
        ids.previous, ids.current = ids.current, set()


def _check_credentials(settings: ScraperConfig) -> None:
    if not settings.email or not settings.password:
        raise CredentialsError(
            "missing_credentials",
            "set scraper.email and scraper.password "
            "(DAHELL_SCRAPER__EMAIL, DAHELL_SCRAPER__PASSWORD or DAHELL_SCRAPER__PASSWORD_FILE)",
        )
    dahell_log.add_secret(settings.password)
