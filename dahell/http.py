"""The daemon's HTTP server: /healthz, /status, /metrics, the status page and look-alike search.

Listens on `http.listen` (127.0.0.1:9464 by default). When `http.token` is set, every route but
`/healthz` and the page's static files needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from dahell import __version__, similar
from dahell.metrics import CONTENT_TYPE
from dahell.status_command import gather_counts

if TYPE_CHECKING:
    from dahell.supervisor import Supervisor

PUBLIC_PATHS = ("/healthz", "/", "/static/")
PUBLIC_PAGES = ("/", "/healthz", "/research")
TOTALS_CACHE_S = 5.0
SUPERVISOR_KEY = web.AppKey("supervisor", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=str),
        status=status,
        content_type="application/json",
    )


class StatusServer:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.runner: web.AppRunner | None = None
        self._totals: dict[str, Any] = {}
        self._totals_at = 0.0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/research", self.research_page),
                web.get("/product/{product_id}", self.product_page),
                web.get("/static/{name}", self.static),
                web.get("/healthz", self.healthz),
                web.get("/status", self.status),
                web.get("/metrics", self.metrics),
                web.get("/similar/{product_id}", self.similar),
                web.get("/api/products", self.products),
            ]
        )
        return app

    async def start(self) -> str:
        host, _, port = self.sup.config.http.listen.rpartition(":")
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]") or "127.0.0.1", int(port))
        await site.start()
        return self.sup.config.http.listen

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.sup.config.http.token
        path = request.path
        # The pages are static files; the data they fetch needs the token.
        public = path in PUBLIC_PAGES or path.startswith(("/static/", "/product/"))
        if token and not public:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return json_response({"error": "missing or wrong bearer token"}, 401)
        return await handler(request)

    # --- routes ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        healthy, reasons = self.sup.healthy()
        stages = {n: rt.state.value for n, rt in self.sup.runtimes.items()}
        body = {"healthy": healthy, "reasons": reasons, "stages": stages}
        return json_response(body, 200 if healthy else 503)

    async def status(self, request: web.Request) -> web.Response:
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
            "totals": await self._cached_totals(),
            "history": list(self.sup.history),
            "recent_errors": list(self.sup.recent_errors),
            "config": self.sup.config.redacted(),
        }
        return json_response(body)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.sup.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def similar(self, request: web.Request) -> web.Response:
        try:
            product_id = int(request.match_info["product_id"])
            k = max(1, min(100, int(request.query.get("k", "10"))))
        except ValueError:
            return json_response({"error": "product id and k must be integers"}, 400)
        try:
            result = await similar.find_similar(self.sup.pool, product_id, k)
        except similar.SimilarError as exc:
            return json_response({"error": str(exc)}, 404)
        return json_response(similar.to_json(result))

    async def products(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(200, int(request.query.get("limit", "24"))))
        except ValueError:
            return json_response({"error": "limit must be an integer"}, 400)
        found = await similar.search_products(self.sup.pool, request.query.get("q", ""), limit)
        return json_response({"products": found})

    async def index(self, request: web.Request) -> web.StreamResponse:
        return await self._web_file("index.html")

    async def research_page(self, request: web.Request) -> web.StreamResponse:
        return await self._web_file("research.html")

    async def product_page(self, request: web.Request) -> web.StreamResponse:
        return await self._web_file("product.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        return await self._web_file(request.match_info["name"])

    async def _web_file(self, name: str) -> web.StreamResponse:
        types = {
            ".html": "text/html",
            ".js": "text/javascript",
            ".css": "text/css",
            ".svg": "image/svg+xml",
            ".png": "image/png",
        }
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in types:
            raise web.HTTPNotFound()
        try:
            data = resources.files("dahell.web").joinpath(name).read_bytes()
        except (FileNotFoundError, ModuleNotFoundError, IsADirectoryError):
            raise web.HTTPNotFound() from None
        return web.Response(body=data, content_type=types[suffix], charset="utf-8")

    async def _cached_totals(self) -> dict[str, Any]:
        if time.monotonic() - self._totals_at > TOTALS_CACHE_S:
            try:
                counts = await gather_counts(self.sup.pool)
            except Exception as exc:  # the page must render even when the database is away
                return {**self._totals, "error": f"{type(exc).__name__}: {exc}"}
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


def time_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()
