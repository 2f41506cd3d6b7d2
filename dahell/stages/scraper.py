"""The scraper stage: pages through the Dropi catalog from inside a logged-in Chromium.

One pass reads the catalog from offset 0 until a page comes back shorter than asked. Each page
is appended to the journal (and fsynced) before its lines go to the loader's queue, and the
pass position is saved after every page in `<data_dir>/scraper/progress.json`, so a crash, a
browser kill or a kill -9 resumes at the page where it stopped.

Mode `api` calls the catalog endpoint with `fetch` inside the app's page, using the app's own
token; mode `ui` clicks "Mostrar más productos" like a person and captures the app's responses.
Both yield the same pages. Page outcomes:

    ok            journaled and sent
    auth refused  (401/403, or isSuccess false with an auth message) log in again, same page
    429           wait Retry-After, same page
    other failure retry with backoff up to `max_page_retries`, then count it and move on
    browser gone  relaunch Chromium, same page
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Request as PwRequest
from playwright.async_api import Response as PwResponse

from dahell import log as dahell_log
from dahell.browser import chromium_args, find_chromium
from dahell.config import ScraperConfig
from dahell.errors import CredentialsError, DahellError
from dahell.journal import JournalWriter
from dahell.stages.base import Context, JournalBatch

CATALOG_PATH = "/api/products/v4/index"
LOGIN_PATH = "/api/login"
SEARCH_PATH = "/dashboard/search"
MORE_TEXT = "Mostrar más productos"
_AUTH_MESSAGE = re.compile(
    r"token|unauthori[sz]ed|unauthenticated|no autorizado|sesi[oó]n|expired|expirad", re.I
)
_MAX_BROWSER_RESTARTS = 5  # in a row, on the same page, before the stage gives up (and restarts)
_MAX_RELOGINS_PER_PAGE = 3

_READ_TOKEN_JS = """() => {
  let t = localStorage.getItem("DROPI_token");
  if (!t) { try { t = JSON.parse(localStorage.getItem("DROPI_LoginResult") || "{}").token; }
            catch (e) { t = null; } }
  return t || null;
}"""

_FETCH_JS = """async ([url, body, timeoutMs]) => {
  let token = localStorage.getItem("DROPI_token");
  if (!token) { try { token = JSON.parse(localStorage.getItem("DROPI_LoginResult") || "{}").token; }
                catch (e) { token = null; } }
  token = (token || "").replace(/^"|"$/g, "");
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    const r = await fetch(url, {
      method: "POST", signal: ctrl.signal,
      headers: {"Content-Type": "application/json", "X-Authorization": "Bearer " + token},
      body: JSON.stringify(body),
    });
    return {status: r.status, retryAfter: r.headers.get("Retry-After"), text: await r.text()};
  } catch (e) {
    return {status: 0, retryAfter: null, text: String(e)};
  } finally { clearTimeout(timer); }
}"""


class BrowserGone(DahellError):
    """Chromium, its page or the Playwright driver went away; relaunch and retry the page."""


class LoginBlocked(DahellError):
    """The login call failed for a reason other than the credentials (firewall, 5xx)."""


# --- pure helpers --------------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (we only read `exp` and `iat`); {} if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def catalog_body(config: ScraperConfig, start: int, size: int) -> dict[str, Any]:
    """The catalog request body as the web app sends it (FORMAT.md)."""
    return {
        "privated_product": False,
        "userVerified": False,
        "favorite": False,
        "with_collection": True,
        "get_stock": False,
        "no_count": True,
        "search_type": "simple",
        "country": config.country,
        "startData": start,
        "pageSize": size,
    }


@dataclass(frozen=True, slots=True)
class PageResult:
    """One answer of the catalog endpoint for the page at `start` (asked with `size`)."""

    start: int
    size: int
    status: int
    text: str
    retry_after: str | None = None

    def body(self) -> dict[str, Any] | None:
        try:
            body = orjson.loads(self.text)
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def products(self) -> list[Any] | None:
        """The product list of a successful answer; None when it is not one."""
        body = self.body()
        if self.status != 200 or body is None or body.get("isSuccess") is False:
            return None
        objects = body.get("objects")
        if objects is None and isinstance(body.get("data"), dict):
            objects = body["data"].get("objects")
        return objects if isinstance(objects, list) else None

    def outcome(self) -> str:
        """`ok`, `auth`, `rate_limited`, or a failure reason for the counters."""
        if self.products() is not None:
            return "ok"
        if self.status in (401, 403):
            return "auth"
        if self.status == 429:
            return "rate_limited"
        body = self.body()
        message = str(body.get("message", "")) if body else ""
        if body is not None and _AUTH_MESSAGE.search(message):
            return "auth"
        if self.status == 0:
            return "network_error"
        if self.status != 200:
            return f"http_{self.status}"
        return "is_success_false" if body is not None else "not_json"

    def retry_after_s(self, default: float = 5.0) -> float:
        try:
            return max(0.0, float(self.retry_after)) if self.retry_after else default
        except ValueError:
            return default


def journal_lines(
    products: list[Any], captured_at: datetime, pass_id: str, start: int
) -> list[bytes]:
    stamp = captured_at.isoformat()
    return [
        orjson.dumps(
            {
                "id": p.get("id") if isinstance(p, dict) else None,
                "capture_timestamp": stamp,
                "pass_id": pass_id,
                "page_start": start,
                "raw_json": p,
            }
        )
        for p in products
    ]


# --- files under <data_dir>/scraper ---------------------------------------------------------


@dataclass
class Progress:
    """Where the current pass stands; saved after every page."""

    pass_id: str = ""
    next_start: int = 0
    pages: int = 0
    products: int = 0
    errors: int = 0
    started_at: float = 0.0  # wall clock
    finished_at: float = 0.0  # wall clock; 0 while the pass runs

    @classmethod
    def new_pass(cls) -> Progress:
        now = datetime.now(UTC)
        return cls(pass_id=now.strftime("%Y%m%dT%H%M%S.%fZ"), started_at=now.timestamp())


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class ScraperFiles:
    """progress.json, storage_state.json (0600), this pass's ids and the previous pass's ids."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.progress = folder / "progress.json"
        self.storage_state = folder / "storage_state.json"
        self.current_ids = folder / "current_pass_ids.txt"
        self.previous_ids = folder / "previous_pass_ids.json"

    def load_progress(self) -> Progress | None:
        try:
            return Progress(**orjson.loads(self.progress.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError):
            return None

    def save_progress(self, progress: Progress) -> None:
        _write_atomic(self.progress, orjson.dumps(asdict(progress)), 0o644)

    def save_storage_state(self, state: dict[str, Any]) -> None:
        _write_atomic(self.storage_state, orjson.dumps(state), 0o600)

    def append_ids(self, ids: list[int]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.current_ids, "a", encoding="ascii") as fh:
            fh.write("".join(f"{i}\n" for i in ids))

    def load_ids(self, previous: bool) -> set[int]:
        try:
            if previous:
                return set(orjson.loads(self.previous_ids.read_bytes()))
            text = self.current_ids.read_text(encoding="ascii")
        except (OSError, orjson.JSONDecodeError, TypeError):
            return set()
        return {int(line) for line in text.split() if line.isdigit()}

    def finish_ids(self, ids: set[int]) -> None:
        _write_atomic(self.previous_ids, orjson.dumps(sorted(ids)), 0o644)
        self.current_ids.unlink(missing_ok=True)


# --- the browser session -------------------------------------------------------------------


class BrowserSession:
    """Chromium, one context and one page, logged in to the app; relaunched when it breaks."""

    def __init__(self, ctx: Context, files: ScraperFiles) -> None:
        self.ctx = ctx
        self.files = files
        self.page_count = 0  # pages fetched since the last launch
        self.exp = 0.0
        self.iat = 0.0
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._page: Page | None = None
        self._crashed = False
        self._broken: tuple[str, str] | None = None
        self.needs_login = False
        self.ui: UiCursor | None = None

    @property
    def settings(self) -> ScraperConfig:
        return self.ctx.config.scraper

    @property
    def page(self) -> Page:
        if self._page is None or self._crashed:
            raise BrowserGone("no live page")
        return self._page

    @property
    def alive(self) -> bool:
        browser_ok = self._browser is not None and self._browser.is_connected()
        return browser_ok and self._page is not None and not self._crashed

    async def ensure(self) -> None:
        """A live, logged-in page with a token that is not about to expire."""
        if self._browser is None and self._broken is None:
            await self.launch()  # the first launch of this run
        elif self._broken is not None or not self.alive:
            reason, error = self._broken or ("page_crash" if self._crashed else "disconnected", "")
            await self.restart(reason, error)
        elif self.page_count >= self.settings.restart_browser_every_pages:
            await self.restart("page_budget")
        elif self.needs_login:
            await self.login()
            self.ctx.log.info("token_refreshed", reason="rejected", expires_in_s=self.expires_in())
        elif self.token_expiring():
            await self.login()
            self.ctx.log.info("token_refreshed", reason="expiring", expires_in_s=self.expires_in())

    async def launch(self) -> None:
        await self.close()
        executable = find_chromium(self.settings.browser_executable)
        self._pw = await async_playwright().start()
        self._browser = await self._pw.chromium.launch(
            executable_path=executable, args=chromium_args(), headless=self.settings.headless
        )
        state = str(self.files.storage_state) if self.files.storage_state.is_file() else None
        self._context = await self._browser.new_context(storage_state=state)
        self._context.set_default_timeout(self.settings.request_timeout_s * 1000)
        self._page = await self._context.new_page()
        self._page.on("crash", self._on_crash)
        self._crashed, self._broken, self.page_count, self.needs_login = False, None, 0, False
        self.ui = UiCursor(self) if self.settings.mode == "ui" else None
        await self._resume_or_login(reused=state is not None)

    async def restart(self, reason: str, error: str = "") -> None:
        self.ctx.log.warning("browser_restarted", reason=reason, error=error[:300])
        self.ctx.count("browser_restarts", reason)
        await self.launch()

    def mark_broken(self, reason: str, error: str = "") -> None:
        """Chromium or its page failed: the next `ensure()` relaunches it (and logs why)."""
        self._broken = (reason, error)

    async def close(self) -> None:
        """Close everything, ignoring errors from a browser that is already gone."""
        for closer in (self._browser_close, self._pw_stop):
            with contextlib.suppress(PlaywrightError, TimeoutError, OSError):
                await asyncio.wait_for(closer(), timeout=15)
        self._pw = self._browser = self._context = self._page = None

    async def _browser_close(self) -> None:
        if self._browser is not None:
            await self._browser.close()

    async def _pw_stop(self) -> None:
        if self._pw is not None:
            await self._pw.stop()

    def _on_crash(self, _page: Page) -> None:
        self._crashed = True

    # --- login -----------------------------------------------------------------------------

    async def _resume_or_login(self, reused: bool) -> None:
        if reused:
            await self.page.goto(self._url("/login"))
            token = await self._read_token()
            if token and self._adopt(token) and not self.token_expiring():
                self.ctx.log.info("session_reused", expires_in_s=self.expires_in())
                return
        await self.login()

    async def login(self) -> None:
        """Log in through the form (one retry on refusal); raise CredentialsError if refused."""
        for attempt in (1, 2):
            answer = await self._submit_login()
            if answer is not None:
                break
            if attempt == 1:
                self.ctx.log.warning("login_refused", attempt=attempt)
                await self.ctx.sleep(2.0)
        else:
            raise CredentialsError(
                "wrong_credentials", "Dropi refused the email and password (tried twice)"
            )
        await self.page.wait_for_url(f"**{SEARCH_PATH}*")
        token = await self._read_token()
        if not token or not self._adopt(token):
            raise LoginBlocked("logged in, but the app kept no token in localStorage")
        await self._save_state()
        self.needs_login = False
        if self.ui is not None:
            self.ui.invalidate()
        self.ctx.count("logins")
        self.ctx.log.info("login_succeeded", expires_in_s=self.expires_in())

    async def _submit_login(self) -> dict[str, Any] | None:
        """The login answer on success; None when the credentials were refused."""
        settings = self.settings
        page = self.page
        await page.goto(self._url("/login"))
        await page.evaluate("() => localStorage.clear()")
        await page.fill("input[name=email]", settings.email)
        await page.fill("input[name=password]", settings.password)
        status, body = await self._click_and_capture_login(page)
        return _login_outcome(status, body)

    async def _click_and_capture_login(self, page: Page) -> tuple[int, dict[str, Any] | None]:
        """Submit the form; the login call's status and body, read in the response handler."""
        answer: asyncio.Future[tuple[int, dict[str, Any] | None]] = (
            asyncio.get_running_loop().create_future()
        )

        async def on_response(response: PwResponse) -> None:
            if _is_login_call(response) and not answer.done():
                body = await _json_or_none(response)
                if not answer.done():
                    answer.set_result((response.status, body))

        page.on("response", on_response)
        try:
            await page.click("button[type=submit], input[type=submit]")
            return await asyncio.wait_for(answer, timeout=self.settings.request_timeout_s)
        except TimeoutError:
            raise LoginBlocked("the login form got no answer in time") from None
        finally:
            page.remove_listener("response", on_response)

    async def _read_token(self) -> str | None:
        token = await self.page.evaluate(_READ_TOKEN_JS)
        if not isinstance(token, str) or not token:
            return None
        return token.strip('"')

    def _adopt(self, token: str) -> bool:
        claims = jwt_claims(token)
        dahell_log.add_secret(token)
        self.exp = float(claims.get("exp") or 0)
        self.iat = float(claims.get("iat") or 0)
        return self.exp == 0 or self.exp > time.time()

    async def _save_state(self) -> None:
        if self._context is None:
            return
        state = await self._context.storage_state()
        await asyncio.to_thread(self.files.save_storage_state, dict(state))

    def expires_in(self) -> float | None:
        return round(self.exp - time.time(), 1) if self.exp else None

    def token_expiring(self) -> bool:
        if not self.exp:
            return False
        margin = self.settings.relogin_before_expiry_s
        if self.iat and self.exp > self.iat:
            margin = min(margin, (self.exp - self.iat) / 2)
        return self.exp - time.time() <= margin

    def _url(self, path: str) -> str:
        return self.settings.app_url.rstrip("/") + path

    # --- fetching --------------------------------------------------------------------------

    async def fetch(self, start: int, size: int) -> PageResult:
        self.page_count += 1
        if self.ui is not None:
            return await self.ui.fetch(start)
        settings = self.settings
        url = settings.api_url.rstrip("/") + CATALOG_PATH
        args = [url, catalog_body(settings, start, size), settings.request_timeout_s * 1000]
        answer = await self.page.evaluate(_FETCH_JS, args)
        return PageResult(
            start, size, int(answer["status"]), str(answer["text"]), answer.get("retryAfter")
        )


def _is_login_call(response: PwResponse) -> bool:
    return LOGIN_PATH in response.url and response.request.method == "POST"


async def _json_or_none(response: PwResponse) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await response.body())
    except (PlaywrightError, orjson.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _login_outcome(status: int, body: dict[str, Any] | None) -> dict[str, Any] | None:
    if status in (400, 401, 422) or (body is not None and body.get("isSuccess") is False):
        return None
    if status != 200:
        raise LoginBlocked(f"the login call answered HTTP {status}")
    if body is None:
        return {}  # the app navigated away before the body could be read: judge by the token
    if body.get("requires_2fa") or body.get("twoFactor") or body.get("two_factor"):
        raise CredentialsError(
            "two_factor_required",
            "the Dropi account asks for a verification code at login; use an account without "
            "two-factor login for the scraper",
        )
    return body


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


# --- the stage -----------------------------------------------------------------------------


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


__all__ = ["BrowserGone", "PageResult", "ScraperStage", "jwt_claims"]
