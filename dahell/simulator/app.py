"""The simulator's three origins: the web app, the JSON API and the image CDN.

Like the real site, the app and the API live on different origins, so the browser sends CORS
preflights and an `Origin` header; the API answers 403 to requests that do not look like a
browser's, 401 to missing, forged or expired tokens, and can be told to misbehave through
`Faults` while it runs.

Time: the simulator keeps a simulated clock (`Simulator.clock()`), `pass_days` days per pass,
starting at `start_at`. The catalog moves to its next pass when a test calls `next_pass()`, or,
with `advance_each_pass`, when a client asks for the first page again after it was served the
last one (a new scrape pass), at most `max_passes` times. `dahell demo` hands that clock to
the scraper, so a few quick passes carry capture times days apart, as a real week of passes does.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import orjson
import structlog
from aiohttp import web

from dahell.simulator.auth import make_jwt, user_for, verify_jwt
from dahell.simulator.catalog import (
    COUNTRY_PREFIX,
    Catalog,
    ImageSpec,
    Product,
    build_catalog,
)
from dahell.simulator.dynamics import move_pass
from dahell.simulator.images import render
from dahell.simulator.settings import SimStats, SimulatorConfig

log = structlog.get_logger("dahell.simulator")

CATALOG_PATH = "/api/products/v4/index"
LOGIN_PATH = "/api/login"
AUTH_MESSAGE = "Token is Expired"


# --- the simulator -------------------------------------------------------------------------


class Simulator:
    """Three aiohttp apps on 127.0.0.1; `async with Simulator(cfg) as sim:` starts them."""

    def __init__(self, config: SimulatorConfig | None = None, port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.faults = self.config.faults
        self.stats = SimStats()
        self.pass_no = 0
        self.start_at = self.config.start_at or datetime.now(UTC)
        self._pass_began = time.monotonic()
        self._served_last_page = False
        # Called with the new pass number when a client's new pass moves the catalog.
        self.on_new_pass: Callable[[int], None] | None = None
        self._port = port
        self._secret = hashlib.sha256(f"jwt:{self.config.seed}".encode()).digest()
        self._base: Catalog = build_catalog(self.config.products, self.config.seed)
        self.catalog: list[Product] = list(self._base.products)
        self._runners: list[web.AppRunner] = []
        self.app_url = self.api_url = self.cdn_url = ""
        self._static = _load_static()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        ports = [self._port, self._port + 1, self._port + 2] if self._port else [0, 0, 0]
        app_port = await self._serve(self._app_routes(), ports[0])
        api_port = await self._serve(self._api_routes(), ports[1])
        cdn_port = await self._serve(self._cdn_routes(), ports[2])
        self.app_url = f"http://127.0.0.1:{app_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.cdn_url = f"http://127.0.0.1:{cdn_port}/"

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    def next_pass(self) -> None:
        """Sales, restocks, price moves (and with `churn`, listings come and go) over one pass."""
        self.pass_no += 1
        self._pass_began = time.monotonic()
        self.catalog = move_pass(
            self.catalog,
            self.config.seed,
            self.pass_no,
            days=self.config.pass_days,
            churn=self.config.churn,
            reserve=self._base.reserve,
        )

    def clock(self) -> datetime:
        """The simulated time: the start of this pass's day, plus the real time since it began.

        Within a pass the clock runs at real speed (capped below the next pass), so captures
        keep their order.
        """
        step = timedelta(days=self.config.pass_days)
        elapsed = min(time.monotonic() - self._pass_began, step.total_seconds() * 0.9)
        return self.start_at + step * self.pass_no + timedelta(seconds=elapsed)

    @property
    def lookalikes(self) -> dict[int, int]:
        """Product id -> id of the product whose photo it reuses (another supplier), both listed."""
        listed = {p["id"] for p in self.catalog}
        return {
            copy: source
            for copy, source in self._base.lookalikes.items()
            if copy in listed and source in listed
        }

    def item_kind(self, product_id: int) -> tuple[str, str]:
        """(noun, qualifier) of what the product is: look-alikes share theirs."""
        kind = self._base.kinds[product_id]
        return kind.noun, kind.qualifier

    def _maybe_advance(self, start: int) -> None:
        """With `advance_each_pass`: a new pass begins when page 0 follows the last page."""
        if not self.config.advance_each_pass or start != 0 or not self._served_last_page:
            return
        self._served_last_page = False
        if not self.config.max_passes or self.pass_no < self.config.max_passes:
            self.next_pass()
            if self.on_new_pass is not None:
                self.on_new_pass(self.pass_no)

    @property
    def images(self) -> dict[str, ImageSpec]:
        """Gallery path (`urlS3`) -> how the CDN renders it (kind, look-alike variant, breakage)."""
        return dict(self._base.images)

    def image_url(self, product: Product) -> str:
        return self.cdn_url + str(product["gallery"][0]["urlS3"])

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        self._runners.append(runner)
        return int(runner.addresses[0][1])

    # --- app origin ------------------------------------------------------------------------

    def _app_routes(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/login", self._page("login.html"))
        app.router.add_get("/dashboard/search", self._page("search.html"))
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/favicon.ico", self._no_content)
        return app

    async def _root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/login")

    def _page(self, name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            html = self._static[name].replace("{{API_URL}}", self.api_url)
            html = html.replace("{{PAGE_SIZE}}", str(self.config.ui_page_size))
            return web.Response(text=html, content_type="text/html")

        return handler

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not name.endswith(".js") or name not in self._static:
            raise web.HTTPNotFound()
        return web.Response(text=self._static[name], content_type="application/javascript")

    # --- API origin ------------------------------------------------------------------------

    def _api_routes(self) -> web.Application:
        app = web.Application(middlewares=[self._cors])
        app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
        app.router.add_post(LOGIN_PATH, self._login)
        app.router.add_post(CATALOG_PATH, self._catalog)
        return app

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if request.headers.get("Origin") == self.app_url:
            response.headers["Access-Control-Allow-Origin"] = self.app_url
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        return response

    async def _preflight(self, request: web.Request) -> web.Response:
        self.stats.preflights += 1
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "content-type, x-authorization",
                "Access-Control-Max-Age": "600",
            },
        )

    def _looks_like_browser(self, request: web.Request) -> bool:
        agent = request.headers.get("User-Agent", "")
        return agent.startswith("Mozilla/5.0") and request.headers.get("Origin") == self.app_url

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Latency, then the firewall: a 403 response, or None to go on."""
        latency = self.faults.latency_s
        latency = self.config.latency_s if latency is None else latency
        if latency > 0:
            await asyncio.sleep(latency)
        if self.faults.require_browser_headers and not self._looks_like_browser(request):
            self.stats.rejected_403 += 1
            return web.Response(status=403, text="<html><body>403 Forbidden</body></html>")
        return None

    async def _login(self, request: web.Request) -> web.Response:
        blocked = await self._gate(request)
        if blocked is not None:
            return blocked
        body = await _json_body(request)
        email, password = str(body.get("email", "")), str(body.get("password", ""))
        known = email in (self.config.email, self.config.two_factor_email)
        if self.faults.fail_login or not known or password != self.config.password:
            self.stats.login_failures += 1
            return _json({"isSuccess": False, "message": "Credenciales inválidas"}, status=401)
        if email == self.config.two_factor_email:
            self.stats.two_factor_logins += 1
            return _json(self._two_factor_answer(email))
        self.stats.logins += 1
        token = self._token(email, scope="full")
        return _json({"isSuccess": True, "token": token, "objects": {"user": user_for(email)}})

    def _two_factor_answer(self, email: str) -> dict[str, Any]:
        return {
            "isSuccess": True,
            "requires_2fa": True,
            "twoFactor": True,
            "message": "Se envió un código de verificación a su correo",
            "token": self._token(email, scope="2fa", lifetime=300),
            "objects": {"user": user_for(email)},
        }

    def _token(self, email: str, scope: str, lifetime: float | None = None) -> str:
        if lifetime is None:
            lifetime = self.faults.token_lifetime_s
            lifetime = self.config.token_lifetime_s if lifetime is None else lifetime
        now = time.time()
        claims = {
            "iss": self.api_url + LOGIN_PATH,
            "sub": user_for(email)["id"],
            "iat": int(now),
            "exp": int(now + lifetime),
            "scope": scope,
            "jti": random.getrandbits(64),
        }
        return make_jwt(claims, self._secret)

    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("X-Authorization", "")
        claims = verify_jwt(header.removeprefix("Bearer ").strip(), self._secret)
        if claims is None or claims.get("scope") != "full":
            message = "Unauthorized"
        elif float(claims.get("exp", 0)) <= time.time() + self.faults.clock_skew_s:
            message = AUTH_MESSAGE
        else:
            return None
        self.stats.rejected_401 += 1
        return _json({"isSuccess": False, "message": message, "status": 401}, status=401)

    async def _catalog(self, request: web.Request) -> web.Response:
        refused = await self._gate(request) or self._auth_error(request)
        if refused is not None:
            return refused
        self.stats.page_requests += 1
        fault = self._catalog_fault(self.stats.page_requests)
        if fault is not None:
            return fault
        body = await _json_body(request)
        start, size = _int(body.get("startData"), 0), _int(body.get("pageSize"), 50)
        self._maybe_advance(start)
        page = self.catalog[start : start + size] if size > 0 and start >= 0 else []
        self._served_last_page = self._served_last_page or len(page) < size
        self.stats.pages_served += 1
        self.stats.served.append((start, size))
        payload = orjson.dumps({"isSuccess": True, "status": 200, "objects": page})
        return web.Response(body=payload, content_type="application/json")

    def _catalog_fault(self, n: int) -> web.Response | None:
        every = self.faults.rate_limit_every
        if every and n % every == 0:
            self.stats.rejected_429 += 1
            retry = f"{self.faults.retry_after_s:g}"
            return _json(
                {"isSuccess": False, "message": "Too Many Attempts."},
                status=429,
                headers={"Retry-After": retry},
            )
        every = self.faults.is_success_false_every
        if every and n % every == 0:
            self.stats.success_false += 1
            message = "Ha ocurrido un error inesperado, intente de nuevo"
            return _json({"isSuccess": False, "status": 500, "message": message})
        return None

    # --- CDN origin ------------------------------------------------------------------------

    def _cdn_routes(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/" + COUNTRY_PREFIX + "/{pid}/{file}", self._image)
        return app

    async def _image(self, request: web.Request) -> web.Response:
        path = f"{COUNTRY_PREFIX}/{request.match_info['pid']}/{request.match_info['file']}"
        spec = self._base.images.get(path)
        if spec is None:
            raise web.HTTPNotFound()
        answer = await asyncio.to_thread(render, spec)
        if spec.broken:
            self.stats.images_broken += 1
        else:
            self.stats.images_served += 1
        return web.Response(
            status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type}
        )


def _json(
    payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return {}
    except ConnectionResetError:  # the page navigated away mid-request
        raise web.HTTPBadRequest() from None
    return body if isinstance(body, dict) else {}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _load_static() -> dict[str, str]:
    folder = resources.files("dahell.simulator") / "static"
    return {f.name: f.read_text(encoding="utf-8") for f in folder.iterdir() if f.is_file()}
