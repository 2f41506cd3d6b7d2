"""The research endpoints of the daemon's HTTP server (`dahell.http` registers them).

    GET /api/research          ranked products: by, category, city, min_margin, limit (default
                               50, max 500), offset, at; `lang` is accepted and ignored
    GET /api/products/<id>     one product: item + stock per warehouse over time, prices, group

A bad parameter answers 400 `{"error": "invalid_parameter", "parameter", "detail"}`; an unknown
product 404 `{"error": "not_found"}`. Money is a JSON number in pesos, null where unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from dahell.research.queries import (
    InvalidParameter,
    parse_filters,
    parse_time,
    product_detail,
    research_rows,
)

__all__ = ["add_routes"]

PoolGetter = Callable[[], asyncpg.Pool]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str), status=status, content_type="application/json"
    )


def _invalid(exc: InvalidParameter) -> web.Response:
    body = {"error": "invalid_parameter", "parameter": exc.parameter, "detail": exc.detail}
    return _json(body, 400)


class ResearchApi:
    def __init__(self, pool: PoolGetter, app_url: Callable[[], str]) -> None:
        self.pool = pool
        self.app_url = app_url

    async def research(self, request: web.Request) -> web.Response:
        try:
            filters = parse_filters(request.query)
        except InvalidParameter as exc:
            return _invalid(exc)
        page = await research_rows(self.pool(), filters)
        return _json(page.to_json())

    async def product(self, request: web.Request) -> web.Response:
        text = request.match_info["product_id"]
        try:
            if not text.isdigit() or len(text) > 18:
                raise InvalidParameter("product_id", f"{text!r} is not a product id")
            at_text = request.query.get("at", "").strip()
            at = parse_time(at_text) if at_text else None
        except InvalidParameter as exc:
            return _invalid(exc)
        detail = await product_detail(self.pool(), int(text), at, app_url=self.app_url())
        if detail is None:
            return _json({"error": "not_found"}, 404)
        return _json(detail)


def add_routes(app: web.Application, pool: PoolGetter, app_url: Callable[[], str]) -> None:
    """Register the research endpoints on `app`."""
    api = ResearchApi(pool, app_url)
    app.add_routes(
        [
            web.get("/api/research", api.research),
            web.get("/api/products/{product_id}", api.product),
        ]
    )
