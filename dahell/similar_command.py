"""`python -m dahell similar PRODUCT_ID [--k N] [--json]`: nearest products by image."""

from __future__ import annotations

import sys

import orjson

from dahell import db
from dahell.config import Config
from dahell.similar import SimilarError, find_similar, render_table, to_json


async def show_similar(config: Config, product_id: int, k: int, *, as_json: bool) -> int:
    if k < 1:
        sys.stderr.write("dahell: --k must be at least 1\n")
        return 2
    async with db.database(config) as database:
        try:
            result = await find_similar(database.pool, product_id, k)
        except SimilarError as exc:
            if as_json:
                sys.stdout.write(orjson.dumps({"error": str(exc)}).decode() + "\n")
            sys.stderr.write(f"dahell: {exc}\n")
            return 1
    if as_json:
        sys.stdout.write(orjson.dumps(to_json(result)).decode() + "\n")
    else:
        sys.stdout.write(render_table(result) + "\n")
    return 0
