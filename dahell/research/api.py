"""The research endpoints of the daemon's HTTP server (`dahell.http` registers them).

    GET /api/research          ranked products: by, category, city, min_margin, limit (default
                               50, max 500), offset, at; `lang` is accepted and ignored
    GET /api/products/<id>     one product: item + stock per warehouse over time, prices, group

A bad parameter answers 400 `{"error": "invalid_parameter", "parameter", "detail"}` (parsed by
`dahell.http_params` before any query runs); an unknown product 404 `{"error": "not_found"}`.
Money is a JSON number in pesos, null where unknown. Both routes hold one of the server's page
query slots while they query, like the look-alike and search routes: a research ranking is the
heaviest read the server does, and the pool is the stages' first.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from aiohttp import web

from dahell.http_guard import QuerySlots
from dahell.http_params import (
    BIGINT_MAX,
    Args,
    bad_parameter,
    choice,
    identifier,
    integer,
    json_response,
    number,
    route,
    text,
    timestamp,
)
from dahell.research.queries import (
    MAX_LIMIT,
    SORTS,
    InvalidParameter,
    ResearchFilters,
    product_detail,
    research_rows,
)

__all__ = ["add_routes"]

PoolGetter = Callable[[], asyncpg.Pool]
#: Category and city names are short; a longer value cannot match one.
MAX_NAME_CHARS = 200
#: Percent margins beyond this are not margins (and stay far inside float8).
MAX_MARGIN_PCT = 1_000_000.0

RESEARCH_PARAMS = {
    "by": choice(*SORTS),
    "category": text(MAX_NAME_CHARS),
    "city": text(MAX_NAME_CHARS),
    "min_margin": number(-MAX_MARGIN_PCT, MAX_MARGIN_PCT),
    "limit": integer(1, MAX_LIMIT),
    "offset": integer(0, BIGINT_MAX),
    "at": timestamp(),
    "lang": text(20),
}
PRODUCT_PARAMS = {"product_id": identifier(), "at": timestamp()}


class ResearchApi:
    def __init__(self, pool: PoolGetter, app_url: Callable[[], str], slots: QuerySlots) -> None:
        self.pool = pool
        self.app_url = app_url
        self.slots = slots

    async def research(self, request: web.Request, args: Args) -> web.Response:
        given = {k: v for k, v in args.items() if v is not None and k != "lang"}
        try:
            filters = ResearchFilters(**given)
        except InvalidParameter as exc:
            return bad_parameter(exc)
        async with self.slots:
            page = await research_rows(self.pool(), filters)
        return json_response(page.to_json())

    async def product(self, request: web.Request, args: Args) -> web.Response:
        async with self.slots:
            detail = await product_detail(
                self.pool(), args["product_id"], args["at"], app_url=self.app_url()
            )
        if detail is None:
            return json_response({"error": "not_found"}, 404)
        return json_response(detail)


def add_routes(
    app: web.Application,
    pool: PoolGetter,
    app_url: Callable[[], str],
    *,
    slots: QuerySlots | None = None,
) -> None:
    """Register the research endpoints on `app`; `slots`: the server's page-query slots."""
    api = ResearchApi(pool, app_url, slots or QuerySlots())
    app.add_routes(
        [
            route("/api/research", api.research, **RESEARCH_PARAMS),
            route("/api/products/{product_id}", api.product, **PRODUCT_PARAMS),
        ]
    )
