"""The daemon's HTTP server: /healthz, /status, /metrics, the status page and look-alike search.

Listens on `http.listen` (127.0.0.1:9464 by default). When `http.token` is set, every route but
`/healthz` and the page's static files needs `Authorization: Bearer <token>`.

On a loopback listen address a web page elsewhere could reach the server through DNS rebinding
(its own name, resolved to 127.0.0.1): so every request must name this server in `Host`
(localhost, 127.0.0.1, [::1], the listen host or `http.allowed_hosts`), else 421
`host_not_allowed`. On 0.0.0.0 (a container) any Host is accepted unless `http.allowed_hosts`
is set. `/status` totals are counted by one query at a time, shared by concurrent requests, so
that page views never take the stages' connections.

Hostile traffic (issue 17): connections are capped and slow request heads timed out
(`dahell.http_guard`); every parameter is parsed by `dahell.http_params` (400 with a reason,
never a 500); an unexpected exception is a 500 `internal_error`, logged once as
`http_request_failed`; every response carries `dahell.http_safety`'s security headers; /healthz
shows stage names, states and reason codes, and the raw texts only with the bearer token (they
are on /status too).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dahell import __version__, similar
from dahell.http_guard import PAGE_QUERY_SLOTS, ConnectionGuard, QuerySlots
from dahell.http_params import Args, identifier, integer, json_response, route, static_name, text
from dahell.http_safety import ErrorMiddleware, SecurityHeaders, ServerLog, public_reasons
from dahell.metrics import CONTENT_TYPE
from dahell.research import api as research_api
from dahell.status_command import gather_counts

if TYPE_CHECKING:
    from dahell.supervisor import Supervisor

PUBLIC_PAGES = ("/", "/healthz", "/research")
TOTALS_CACHE_S = 5.0
__all__ = ["PAGE_QUERY_SLOTS", "StatusServer", "host_allowed", "is_loopback", "split_host"]
#: Pending connections the kernel queues for accept (nginx's default on Linux).
LISTEN_BACKLOG = 511
MAX_QUERY_CHARS = 200
TOTALS_WAIT_S = 10.0  # a request waits this long for the shared count, then shows the last one
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,100}(\.[A-Za-z0-9]{1,10})+")
SUPERVISOR_KEY = web.AppKey("supervisor", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusServer:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._totals: dict[str, Any] = {}
        self._totals_at = 0.0
        self._totals_task: asyncio.Task[dict[str, Any]] | None = None
        #: Held by every route that queries the database for a page (research included).
        self.page_queries = QuerySlots(PAGE_QUERY_SLOTS)
        http = supervisor.config.http
        self.guard = ConnectionGuard(
            self._new_handler,
            header_timeout_s=http.header_timeout_s,
            max_connections=http.max_connections,
        )
        self._errors = ErrorMiddleware()
        self.server_log = ServerLog()

    def app(self) -> web.Application:
        middlewares = [self.guard.track_requests, self._errors.handle, self._check_host, self._auth]
        app = web.Application(middlewares=middlewares)
        app.on_response_prepare.append(
            SecurityHeaders(lambda: self.sup.config.loader.image_base_url)
        )
        app.add_routes(
            [
                route("/", self.index),
                route("/research", self.research_page),
                route("/product/{product_id}", self.product_page, product_id=identifier()),
                route("/static/{name}", self.static, name=static_name(STATIC_NAME)),
                route("/healthz", self.healthz),
                route("/status", self.status),
                route("/metrics", self.metrics),
                route(
                    "/similar/{product_id}",
                    self.similar,
                    product_id=identifier(),
                    k=integer(1, 100, default=10),
                ),
                route(
                    "/api/products",
                    self.products,
                    q=text(MAX_QUERY_CHARS, default=""),
                    limit=integer(1, 200, default=24),
                ),
            ]
        )
        research_api.add_routes(
            app,
            lambda: self.sup.pool,
            lambda: self.sup.config.scraper.app_url,
            slots=self.page_queries,
        )
        return app

    async def start(self) -> str:
        """Listen; connections go through the guard (see `dahell.http_guard`)."""
        http = self.sup.config.http
        host, _, port = http.listen.rpartition(":")
        self.runner = web.AppRunner(
            self.app(),
            access_log=None,
            keepalive_timeout=http.keepalive_timeout_s,
            logger=self.server_log,
        )
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self.guard,
            host.strip("[]") or "127.0.0.1",
            int(port),
            backlog=LISTEN_BACKLOG,
            reuse_address=True,
        )
        return http.listen

    def _new_handler(self) -> web.RequestHandler:
        assert self.runner is not None and self.runner.server is not None
        return self.runner.server()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.guard.close()
        self.server_log.bad_requests.close()

    @web.middleware
    async def _check_host(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Host")
        if given is None or host_allowed(given, self.sup.config.http):
            return await handler(request)
        detail = (
            f"Host {given[:200]!r} is not this server: add the name to http.allowed_hosts "
            f"to reach it under that name"
        )
        return json_response({"error": "host_not_allowed", "detail": detail}, 421)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.sup.config.http.token
        path = request.path
        # The pages are static files; the data they fetch needs the token.
        public = path in PUBLIC_PAGES or path.startswith(("/static/", "/product/"))
        if token and not public and not self._bearer_ok(request):
            return json_response({"error": "missing or wrong bearer token"}, 401)
        return await handler(request)

    def _bearer_ok(self, request: web.Request) -> bool:
        """Whether the request carries the configured token (False when none is configured)."""
        token = self.sup.config.http.token
        given = request.headers.get("Authorization", "")
        return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    # --- routes ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request, args: Args) -> web.Response:
        """Public: reason codes only; the texts (paths, library messages) need the token."""
        healthy, reasons = self.sup.healthy()
        stages = {n: rt.state.value for n, rt in self.sup.runtimes.items()}
        shown = reasons if self._bearer_ok(request) else public_reasons(reasons)
        body = {"healthy": healthy, "reasons": shown, "stages": stages}
        return json_response(body, 200 if healthy else 503)

    async def status(self, request: web.Request, args: Args) -> web.Response:
        healthy, reasons = self.sup.healthy()
        body = {
            "service": "dahell",
            "version": __version__,
            "started_at": self.sup.started_at.isoformat(),
            "now": time_iso(),
            "healthy": healthy,
            "unhealthy_reasons": reasons,
            "loop_lag_ms": round(self.sup.loop_lag_s * 1000, 2),
            "stages": {n: self.sup.stage_view(rt) for n, rt in self.sup.runtimes.items()},
            "queues": {n: q.qsize() for n, q in self.sup.queues.items()},
            "http": self.guard.snapshot(),
            "totals": await self._cached_totals(),
            "history": list(self.sup.history),
            "recent_errors": list(self.sup.recent_errors),
            "config": self.sup.config.redacted(),
        }
        return json_response(body)

    async def metrics(self, request: web.Request, args: Args) -> web.Response:
        return web.Response(body=self.sup.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def similar(self, request: web.Request, args: Args) -> web.Response:
        try:
            async with self.page_queries:
                result = await similar.find_similar(self.sup.pool, args["product_id"], args["k"])
        except similar.SimilarError as exc:
            return json_response({"error": str(exc)}, 404)
        return json_response(similar.to_json(result))

    async def products(self, request: web.Request, args: Args) -> web.Response:
        async with self.page_queries:
            found = await similar.search_products(self.sup.pool, args["q"], args["limit"])
        return json_response({"products": found})

    async def index(self, request: web.Request, args: Args) -> web.StreamResponse:
        return await self._web_file("index.html")

    async def research_page(self, request: web.Request, args: Args) -> web.StreamResponse:
        return await self._web_file("research.html")

    async def product_page(self, request: web.Request, args: Args) -> web.StreamResponse:
        return await self._web_file("product.html")

    async def static(self, request: web.Request, args: Args) -> web.StreamResponse:
        return await self._web_file(args["name"])

    async def _web_file(self, name: str) -> web.StreamResponse:
        types = {
            ".html": "text/html",
            ".js": "text/javascript",
            ".css": "text/css",
            ".svg": "image/svg+xml",
            ".png": "image/png",
        }
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if not STATIC_NAME.fullmatch(name) or suffix not in types:
            raise web.HTTPNotFound()
        try:
            data = resources.files("dahell.web").joinpath(name).read_bytes()
        except (OSError, ValueError, ModuleNotFoundError):
            raise web.HTTPNotFound() from None
        return web.Response(body=data, content_type=types[suffix], charset="utf-8")

    async def _cached_totals(self) -> dict[str, Any]:
        """The totals, counted at most every TOTALS_CACHE_S by one shared computation."""
        if time.monotonic() - self._totals_at <= TOTALS_CACHE_S:
            return self._totals
        if self._totals_task is None or self._totals_task.done():
            self._totals_task = asyncio.create_task(self._count_totals(), name="http-totals")
            # Retrieved here too: every waiter may have timed out before it failed.
            self._totals_task.add_done_callback(_retrieve)
        try:
            # shield: a client that goes away must not cancel the count the others wait for
            async with asyncio.timeout(TOTALS_WAIT_S):
                return await asyncio.shield(self._totals_task)
        except TimeoutError:
            return {**self._totals, "error": "the totals are still being counted"}
        except Exception as exc:  # the page must render even when the database is away
            return {**self._totals, "error": f"{type(exc).__name__}: {exc}"}

    async def _count_totals(self) -> dict[str, Any]:
        counts = await gather_counts(self.sup.pool)
        self._totals = {
            "products": counts["products"],
            "suppliers": counts["suppliers"],
            "warehouses": counts["warehouses"],
            "stock_log_rows": counts["stock_log_rows"],
            "rejects": counts["rejects"],
            "embeddings": {
                k: counts["embeddings"][k]
                for k in (
                    "done",
                    "pending",
                    "failed",
                    "retrying",
                    "retrying_by_reason",
                    "waiting",
                    "identical_photos",
                )
            },
        }
        self._totals_at = time.monotonic()
        return self._totals


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def host_allowed(given: str, http: Any) -> bool:
    """Whether a request's Host header names this server (see the module doc)."""
    name, port = split_host(given)
    listen_host = split_host(http.listen)[0]
    allowed = {split_host(entry) for entry in http.allowed_hosts if entry.strip()}
    if (name, None) in allowed or (name, port) in allowed:
        return True
    if name in LOOPBACK_NAMES or name == listen_host:
        return True
    # On 0.0.0.0 or a LAN address only a configured list is enforced.
    return not allowed and not is_loopback(listen_host)


def split_host(value: str) -> tuple[str, int | None]:
    """("name", port) from "name", "name:port", "[::1]:port"; lower case, no brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    return name.rstrip("."), int(port) if port.isdigit() else None


def is_loopback(host: str) -> bool:
    """Whether a listen host is a loopback address (empty: 127.0.0.1, what start() binds)."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.endswith(".localhost")


def time_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()
