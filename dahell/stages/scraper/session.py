"""The browser session: Chromium, one context and one page, logged in to the Dropi app.

It relaunches Chromium when the page crashes, the browser disconnects or
`restart_browser_every_pages` is reached; logs in again when the token is rejected or about to
expire; and keeps the login (`storage_state`) so that a restart reuses it. Mode `api` fetches
catalog pages with the app's own token from inside the page; mode `ui` hands that to `UiCursor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Response as PwResponse

from dahell import log as dahell_log
from dahell.browser import chromium_args, find_chromium
from dahell.config import ScraperConfig
from dahell.errors import CredentialsError, DahellError
from dahell.stages.base import Context
from dahell.stages.scraper.catalog import (
    CATALOG_PATH,
    LOGIN_PATH,
    SEARCH_PATH,
    PageResult,
    catalog_body,
    jwt_claims,
)
from dahell.stages.scraper.files import ScraperFiles
from dahell.stages.scraper.ui import UiCursor

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
