"""Mode ui: the app's own catalog page, scrolled and clicked like a person."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Request as PwRequest
from playwright.async_api import Response as PwResponse

from dahell.stages.scraper.catalog import CATALOG_PATH, MORE_TEXT, SEARCH_PATH, PageResult

if TYPE_CHECKING:
    from dahell.stages.scraper.session import BrowserSession


class UiCursor:
    """Mode ui: the app's own catalog page, advanced by clicking "Mostrar más productos".

    Every catalog response is captured in a `response` handler (bodies must be read there);
    pages before the one asked for (after a reload) are skipped, already journaled.
    """

    def __init__(self, session: BrowserSession) -> None:
        self.session = session
        self._queue: asyncio.Queue[PageResult] = asyncio.Queue()
        self._pending: set[PwRequest] = set()
        self._open = False
        page = session.page
        page.on("request", self._on_request)
        page.on("requestfailed", self._on_request_failed)
        page.on("response", self._on_response)

    def invalidate(self) -> None:
        self._open = False

    async def fetch(self, start: int) -> PageResult:
        if not self._open:
            await self._reopen()
        deadline = time.monotonic() + self.session.settings.request_timeout_s
        while time.monotonic() < deadline:
            if self._queue.empty() and not self._pending:
                await self._click_more()
            try:
                result = await asyncio.wait_for(self._queue.get(), timeout=1.0)
            except TimeoutError:
                continue
            if result.outcome() in ("auth", "rate_limited") or result.start == start:
                return result
            if result.start > start:  # the app is past the page we need: start over
                await self._reopen()
                deadline = time.monotonic() + self.session.settings.request_timeout_s
        return PageResult(start, 0, 0, "no catalog response from the app in time")

    async def _reopen(self) -> None:
        self._queue = asyncio.Queue()
        self._pending.clear()
        await self.session.page.goto(self.session._url(SEARCH_PATH))
        self._open = True

    async def _click_more(self) -> None:
        page = self.session.page
        await page.mouse.wheel(0, 20_000)
        button = page.get_by_text(MORE_TEXT)
        if not await button.is_visible():
            return
        await button.scroll_into_view_if_needed()
        await button.click()

    def _on_request(self, request: PwRequest) -> None:
        if _is_catalog(request):
            self._pending.add(request)

    def _on_request_failed(self, request: PwRequest) -> None:
        self._pending.discard(request)

    async def _on_response(self, response: PwResponse) -> None:
        request = response.request
        if not _is_catalog(request):
            return
        try:
            sent = request.post_data_json or {}
            text = await response.text()
            result = PageResult(
                int(sent.get("startData", 0)),
                int(sent.get("pageSize", 0)),
                response.status,
                text,
                await response.header_value("retry-after"),
            )
            self._queue.put_nowait(result)
        except (PlaywrightError, ValueError, TypeError):
            pass
        finally:
            self._pending.discard(request)


def _is_catalog(request: PwRequest) -> bool:
    return CATALOG_PATH in request.url and request.method == "POST"
