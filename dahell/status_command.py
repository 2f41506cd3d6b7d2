"""`python -m dahell status`: the counts the old audit gathered by hand, and live stage states.

The counts come from the database; the stage states from the running daemon's `/status`
(if one answers on `http.listen`).
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import asyncpg
import orjson
from rich.console import Console
from rich.table import Table

from dahell import db
from dahell.config import Config
from dahell.console import make_console
from dahell.embedding_backlog import retry_counts

COUNTS_SQL = """
SELECT
  (SELECT count(*) FROM products) AS products,
  (SELECT count(*) FROM suppliers) AS suppliers,
  (SELECT count(*) FROM warehouses) AS warehouses,
  (SELECT count(*) FROM categories) AS categories,
  (SELECT count(*) FROM product_variations) AS variations,
  (SELECT count(*) FROM product_stock_log) AS stock_log_rows,
  (SELECT count(*) FROM variation_stock_log) AS variation_stock_log_rows,
  (SELECT count(*) FROM price_history) AS price_history_rows,
  (SELECT count(*) FROM product_embeddings) AS embeddings_done,
  (SELECT max(last_seen_at) FROM products) AS last_seen_at
"""

#: Embedded products whose photo has the very same bytes as another embedded product's.
IDENTICAL_PHOTOS_SQL = """
SELECT count(image_sha256) - count(DISTINCT image_sha256) FROM embedding_jobs WHERE state = 'done'
"""


async def gather_counts(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every count `status` shows, as one JSON-able dict (also used by the HTTP server).

    Read in one snapshot (a read-only REPEATABLE READ transaction): a loader batch commits its
    products and its line totals together, and separate snapshots could show every line loaded
    with the products of the last batch still missing.
    """
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        row = await conn.fetchrow(COUNTS_SQL)
        rejects = await conn.fetch(
            "SELECT reason, count(*) AS n FROM rejects GROUP BY reason ORDER BY n DESC, reason"
        )
        totals = await conn.fetch(
            "SELECT outcome, lines, products FROM load_totals ORDER BY outcome"
        )
        jobs = await conn.fetch(
            "SELECT state, coalesce(reason, '') AS reason, count(*) AS n FROM embedding_jobs"
            " GROUP BY state, reason"
        )
        retrying_by_reason = await retry_counts(conn)
        identical = await conn.fetchval(IDENTICAL_PHOTOS_SQL)
    pending = sum(r["n"] for r in jobs if r["state"] in ("pending", "claimed"))
    failed_by_reason = {r["reason"] or "unknown": r["n"] for r in jobs if r["state"] == "failed"}
    # physical lines by line outcome (loaded, rejected); products by product outcome
    lines_by_outcome = {r["outcome"]: r["lines"] for r in totals if r["lines"]}
    products_by_outcome = {r["outcome"]: r["products"] for r in totals if r["products"]}
    last_seen = row["last_seen_at"]
    return {
        "products": row["products"],
        "suppliers": row["suppliers"],
        "warehouses": row["warehouses"],
        "categories": row["categories"],
        "variations": row["variations"],
        "stock_log_rows": row["stock_log_rows"],
        "variation_stock_log_rows": row["variation_stock_log_rows"],
        "price_history_rows": row["price_history_rows"],
        "lines_loaded": lines_by_outcome.get("loaded", 0),
        "lines_rejected": lines_by_outcome.get("rejected", 0),
        "lines_by_outcome": lines_by_outcome,
        "products_by_outcome": products_by_outcome,
        "rejects": sum(r["n"] for r in rejects),
        "rejects_by_reason": {r["reason"]: r["n"] for r in rejects},
        "embeddings": {
            "done": row["embeddings_done"],
            "pending": pending,
            "failed": sum(failed_by_reason.values()),
            "failed_by_reason": failed_by_reason,
            "retrying": sum(retrying_by_reason.values()),
            "retrying_by_reason": retrying_by_reason,
            "waiting": pending + sum(retrying_by_reason.values()),
            "identical_photos": identical,
        },
        "last_seen_at": last_seen.isoformat() if last_seen else None,
    }


async def fetch_daemon_status(config: Config) -> dict[str, Any] | None:
    """The running daemon's /status, or None when none answers."""
    if not config.http.enabled:
        return None
    host, _, port = config.http.listen.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host
    headers = {"Authorization": f"Bearer {config.http.token}"} if config.http.token else {}
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://{host}:{port}/status", headers=headers) as resp,
        ):
            if resp.status != 200:
                return None
            data: dict[str, Any] = await resp.json()
            return data
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def show_status(config: Config, *, as_json: bool) -> int:
    daemon = await fetch_daemon_status(config)
    async with db.database(config) as database:
        counts = await gather_counts(database.pool)
    daemon_view = _daemon_view(daemon)
    if as_json:
        sys.stdout.write(orjson.dumps({**counts, "daemon": daemon_view}).decode() + "\n")
        return 0
    _print(counts, daemon_view)
    return 0


def _daemon_view(daemon: dict[str, Any] | None) -> dict[str, Any] | None:
    if daemon is None:
        return None
    return {
        "running": True,
        "healthy": daemon.get("healthy"),
        "unhealthy_reasons": daemon.get("unhealthy_reasons", []),
        "stages": {
            name: {
                k: s.get(k)
                for k in ("state", "since", "restarts", "reason", "last_error", "counters")
            }
            for name, s in daemon.get("stages", {}).items()
        },
    }


def _print(counts: dict[str, Any], daemon: dict[str, Any] | None) -> None:
    console = make_console()
    table = Table(title="dahell status", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in (
        "products",
        "suppliers",
        "warehouses",
        "categories",
        "variations",
        "stock_log_rows",
        "variation_stock_log_rows",
        "price_history_rows",
        "lines_loaded",
        "lines_rejected",
        "rejects",
    ):
        table.add_row(key.replace("_", " "), f"{counts[key]:,}")
    emb = counts["embeddings"]
    for key in ("done", "pending", "failed", "retrying", "identical_photos"):
        table.add_row(f"embeddings {key.replace('_', ' ')}", f"{emb[key]:,}")
    table.add_row("last seen", counts["last_seen_at"] or "-")
    console.print(table)
    _print_reasons(console, "rejects by reason", counts["rejects_by_reason"])
    _print_reasons(console, "embedding failures by reason", emb["failed_by_reason"])
    _print_reasons(console, "embeddings waiting for a retry, by reason", emb["retrying_by_reason"])
    if daemon is None:
        console.print("daemon: not running (no answer on http.listen)")
        return
    stages = Table(title="daemon stages" + ("" if daemon["healthy"] else " (UNHEALTHY)"))
    for column in ("stage", "state", "since", "restarts", "reason"):
        stages.add_column(column)
    for name, s in daemon["stages"].items():
        reason = s.get("reason") or s.get("last_error") or ""
        stages.add_row(name, s["state"], s.get("since") or "", str(s.get("restarts", 0)), reason)
    console.print(stages)
    vectorizer = (daemon["stages"].get("vectorizer") or {}).get("counters") or {}
    if vectorizer:
        units = {k: v for k, v in vectorizer.items() if k.split(":")[0] in ("embedded", "reused")}
        _print_reasons(console, "vectorizer since start (reused: no inference)", units)


def _print_reasons(console: Console, title: str, reasons: dict[str, int]) -> None:
    if not reasons:
        return
    table = Table(title=title)
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, n in reasons.items():
        table.add_row(reason, f"{n:,}")
    console.print(table)
