"""Research benchmark: `python tests/benchmarks/bench_research.py [--products N] [--dims D]`.

Builds a synthetic catalog in a fresh embedded database: N products (default 25,000) over 500
suppliers and 5 warehouses, about 14 daily captures each in `product_stock_log` (stock falls at
a product-specific rate, some restock, a few vanish), prices, categories, and N embeddings
(random unit vectors of D dimensions, default 1152, a third of them in look-alike clusters).
Then, in one run:

- the research query (`research_rows`, limit 50) for each sort key, `--repeats` times each:
  p50 / p95 latency (goal: p95 < 200 ms), plus one filtered query (city + min margin); once
  computed live from the stock history, once ranked from the sales summary the groups stage
  keeps (and how long refreshing that summary takes);
- group upkeep: `recompute_all` on N - 1,000 embeddings, then 1,000 new embeddings placed by
  `upkeep_round` (incremental), then `recompute_all` on all N again (the baseline), with the
  ratio full / incremental, and a check that both give the same groups.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dahell import db  # noqa: E402
from dahell.research import groups, sales  # noqa: E402
from dahell.research.queries import ResearchFilters, research_rows  # noqa: E402

DISTANCE = 0.06
NEW_EMBEDDINGS = 1000
CITIES = ["Bogotá", "Medellín", "Cali", "Barranquilla", "Bucaramanga"]
START = datetime(2026, 11, 1, 12, tzinfo=UTC)


def catalog(n: int, captures: int, rng: random.Random) -> dict[str, list[tuple[object, ...]]]:
    """Rows for every table, as COPY records."""
    products: list[tuple[object, ...]] = []
    stock_log: list[tuple[object, ...]] = []
    stock_now: list[tuple[object, ...]] = []
    prices: list[tuple[object, ...]] = []
    cats: list[tuple[object, ...]] = []
    for pid in range(1, n + 1):
        first = 0 if rng.random() < 0.9 else rng.randrange(captures)
        last = captures - 1 if rng.random() < 0.97 else rng.randrange(first, captures)
        sale = rng.randrange(10, 200) * 1000
        suggested = None if rng.random() < 0.1 else sale + rng.randrange(5, 80) * 1000
        seen = START + timedelta(days=last)
        products.append((pid, 1 + pid % 500, f"SKU{pid}", f"Producto {pid}", sale, suggested,
                         "SIMPLE", f"https://cdn.example/{pid}.jpg", seen, seen, b"h"))  # fmt: skip
        for wh in range(1 + pid % 5, 2 + pid % 5 + (pid % 3 == 0)):
            qty, rate, prev = rng.randrange(20, 500), rng.random() * 8, None
            for day in range(first, last + 1):
                if prev is not None:
                    qty = max(0, qty - int(rng.expovariate(1 / max(rate, 0.1))))
                    if rng.random() < 0.05:
                        qty += rng.randrange(50, 300)
                if qty != prev:
                    stock_log.append((pid, wh, qty, START + timedelta(days=day)))
                prev = qty
            stock_now.append((pid, 0, wh, qty, seen))
        prices.append((pid, 0, sale, suggested, START + timedelta(days=first)))
        cats.append((pid, 1 + pid % 12))
    return {"products": products, "product_stock_log": stock_log, "product_stock": stock_now,
            "price_history": prices, "product_categories": cats}  # fmt: skip


def vectors(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors; about a third of them in clusters of 2-6 look-alikes (~0.02-0.04 apart)."""
    out = rng.standard_normal((n, dims)).astype(np.float32)
    i = 0
    while i < n:
        size = int(rng.integers(2, 7)) if rng.random() < 0.12 else 1
        center = out[i]
        center /= np.linalg.norm(center)
        for j in range(i + 1, min(i + size, n)):
            noise = rng.standard_normal(dims).astype(np.float32)
            out[j] = center + 0.2 * noise / np.linalg.norm(noise)
        i += size
    normed: np.ndarray = out / np.linalg.norm(out, axis=1, keepdims=True)
    return normed


async def fill(pool: asyncpg.Pool, n: int, captures: int, dims: int) -> np.ndarray:
    rows = catalog(n, captures, random.Random(7))
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO suppliers (supplier_id, name) SELECT g, 'Proveedor ' || g"
            " FROM generate_series(1, 500) g"
        )
        await conn.executemany(
            "INSERT INTO warehouses (warehouse_id, name, city, first_seen_at, last_seen_at)"
            " VALUES ($1, $2, $3, $4, $4)",
            [(w, f"Bodega {w}", CITIES[w - 1], START) for w in range(1, 6)],
        )
        await conn.execute(
            "INSERT INTO categories (id, name) SELECT g, 'Categoría ' || g"
            " FROM generate_series(1, 12) g"
        )
        await conn.copy_records_to_table(
            "products",
            records=rows["products"],
            columns=[
                "product_id",
                "supplier_id",
                "sku",
                "title",
                "sale_price",
                "suggested_price",
                "product_type",
                "url_image_s3",
                "last_seen_at",
                "captured_at",
                "content_hash",
            ],
        )
        await conn.copy_records_to_table(
            "product_stock_log",
            records=rows["product_stock_log"],
            columns=["product_id", "warehouse_id", "stock_qty", "snapshot_at"],
        )
        for table in ("product_stock", "price_history", "product_categories"):
            columns = {
                "product_stock": ["product_id", "variation_id", "warehouse_id", "stock_qty",
                                  "snapshot_at"],
                "price_history": ["product_id", "variation_id", "sale_price", "suggested_price",
                                  "captured_at"],
                "product_categories": ["product_id", "category_id"],
            }[table]  # fmt: skip
            await conn.copy_records_to_table(table, records=rows[table], columns=columns)
        await conn.execute(
            "INSERT INTO embedding_jobs (product_id, image_url, state)"
            " SELECT product_id, url_image_s3, 'done' FROM products"
        )
        await conn.execute("ANALYZE")
    print(f"catalog: {n} products, {len(rows['product_stock_log'])} stock log rows")
    return vectors(n, dims, np.random.default_rng(7))


async def write_vectors(
    pool: asyncpg.Pool, ids: list[int], vecs: np.ndarray, at: datetime, chunk: int = 500
) -> None:
    for start in range(0, len(ids), chunk):
        part = vecs[start : start + chunk]
        await pool.execute(
            "INSERT INTO product_embeddings (product_id, embedding_visual, processed_at)"
            " SELECT i.id, ($2::real[])[(i.n - 1) * $3 + 1 : i.n * $3]::vector, $4"
            " FROM unnest($1::bigint[]) WITH ORDINALITY AS i(id, n)",
            ids[start : start + chunk],
            part.ravel().tolist(),
            part.shape[1],
            at,
        )


async def resize(pool: asyncpg.Pool, dims: int) -> None:
    await pool.execute("DROP INDEX product_embeddings_visual_hnsw")
    await pool.execute(
        f"ALTER TABLE product_embeddings ALTER COLUMN embedding_visual TYPE vector({dims})"
    )


async def bench_queries(pool: asyncpg.Pool, repeats: int, summary: bool) -> None:
    cases = [ResearchFilters(by=by) for by in ("sales", "margin", "suppliers", "new")]
    cases.append(ResearchFilters(by="sales", city="Cali", min_margin=30))
    await pool.execute("DELETE FROM research_upkeep WHERE name = 'sales'")
    if summary:
        started = time.perf_counter()
        rows = await sales.refresh_summary(pool)
        print(f"\nsales summary refreshed: {rows} products in"
              f" {time.perf_counter() - started:.2f} s")  # fmt: skip
    how = "from the sales summary" if summary else "live from the stock history"
    print(f"\nresearch query ({how}), limit 50, {repeats} runs each (ms):")
    print(f"{'case':<28}{'p50':>8}{'p95':>8}{'max':>8}")
    for filters in cases:
        await research_rows(pool, filters)  # warm
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            page = await research_rows(pool, filters)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        name = filters.by + (" +city+margin" if filters.city else "")
        print(f"{name:<28}{statistics.median(times):>8.1f}{p95:>8.1f}{times[-1]:>8.1f}"
              f"   ({page.total} rows)")  # fmt: skip


async def bench_groups(pool: asyncpg.Pool, vecs: np.ndarray, dims: int) -> None:
    n = len(vecs)
    old, new = list(range(1, n - NEW_EMBEDDINGS + 1)), list(range(n - NEW_EMBEDDINGS + 1, n + 1))
    started = time.perf_counter()
    await write_vectors(pool, old, vecs[: len(old)], START)
    await pool.execute(
        "CREATE INDEX product_embeddings_visual_hnsw ON product_embeddings"
        " USING hnsw (embedding_visual vector_cosine_ops)"
    )
    await pool.execute("ANALYZE product_embeddings")
    print(f"\n{len(old)} embeddings of {dims} dims written and indexed in"
          f" {time.perf_counter() - started:.1f} s")  # fmt: skip
    first = await groups.recompute_all(pool, DISTANCE)
    print(f"full recomputation, {len(old)} products: {first.seconds:.2f} s")
    await write_vectors(pool, new, vecs[len(old) :], START + timedelta(days=20))
    total, rounds = 0.0, 0
    while True:
        r = await groups.upkeep_round(pool, DISTANCE, batch=500)
        if not r.work:
            break
        total += r.seconds
        rounds += 1
    incremental = await assignment(pool)
    full = await groups.recompute_all(pool, DISTANCE)
    same = incremental == await assignment(pool)
    stats = await groups.group_stats(pool)
    print(f"incremental upkeep, {NEW_EMBEDDINGS} new embeddings: {total:.2f} s in {rounds} rounds")
    print(f"full recomputation, {n} products: {full.seconds:.2f} s")
    print(
        f"ratio full / incremental per 1,000 new: {full.seconds / max(total, 1e-9):.1f}x;"
        f" same groups: {same}; {stats.as_dict()}"
    )


async def assignment(pool: asyncpg.Pool) -> dict[int, int]:
    rows = await pool.fetch("SELECT product_id, group_id FROM research_groups")
    return {r[0]: r[1] for r in rows}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=25_000)
    parser.add_argument("--captures", type=int, default=14)
    parser.add_argument("--dims", type=int, default=1152)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-groups", action="store_true", help="only the research queries")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dahell-bench-research-"))
    server = await asyncio.to_thread(db.start_embedded, folder)
    try:
        await db.apply_migrations(server.dsn)
        pool = await asyncpg.create_pool(server.dsn, min_size=1, max_size=4,
                                         init=db._init_connection)  # fmt: skip
        await resize(pool, args.dims)
        vecs = await fill(pool, args.products, args.captures, args.dims)
        if not args.skip_groups:
            await bench_groups(pool, vecs, args.dims)
        await bench_queries(pool, args.repeats, summary=False)
        await bench_queries(pool, args.repeats, summary=True)
        await pool.close()
    finally:
        await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    asyncio.run(main())
