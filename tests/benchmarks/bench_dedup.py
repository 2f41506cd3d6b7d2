"""Identical photos embedded once: the whole vectorizer stage with and without reuse, one run.

    python tests/benchmarks/bench_dedup.py [--tiny-products 5000] [--so400m-products 200]
                                           [--so400m-precision fp32|int8] [--skip-so400m]
                                           [--skip-tiny] [--rounds 2] [--quick]

A catalog in which a fifth of the products share their photo file with another product (half of
them through the very same URL, half through another URL serving the same bytes, as a CDN copy
does) is embedded by the whole `VectorizerStage` (claim, download, hash, preprocess, inference,
batched writes into an embedded PostgreSQL; images from an aiohttp server on 127.0.0.1) twice
from the same pending state: `vectorizer.dedup_images = false` and `true` (the tiny model:
`--rounds` runs of each, alternating, best kept, as the machine is shared). For each model (the
committed tiny one: the run is I/O bound; a random tower of so400m's exact shape: the model is
the bound on a CPU) it prints wall time, inferences, downloads, reuses, the ratio without/with,
and the hours the full 25,000-product catalog (same share of identical photos) would take.

`--quick` shrinks both catalogs (500 tiny, 20 so400m) for a smoke run. Needs the [export] extra
for the so400m part. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import structlog
from aiohttp import web
from PIL import Image

from dahell import config as config_mod
from dahell import db
from dahell.stages.base import Context
from dahell.stages.vectorizer import VectorizerStage

sys.path.insert(0, str(Path(__file__).parent))
from bench_vectorizer import build_int8, build_so400m

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-siglip"
CORES = os.cpu_count() or 1
CATALOG = 25_000


def distinct_photos(n: int, size: int = 400) -> list[bytes]:
    """`n` product-photo-like JPEGs, all different bytes (~15-30 KB each)."""
    rng = np.random.default_rng(0)
    bases = [
        np.asarray(
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize(
                (size, size), Image.Resampling.BICUBIC
            )
        )
        for _ in range(16)
    ]
    out = []
    for i in range(n):
        arr = bases[i % len(bases)].copy()
        y, x = divmod(i // len(bases), size // 8)
        arr[(y * 8) % size : (y * 8) % size + 8, x * 8 : x * 8 + 8] = rng.integers(0, 255, 3)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


class Cdn:
    """`/img/{i}` and `/copy/{i}` both serve photo i; counts requests."""

    def __init__(self, photos: list[bytes]) -> None:
        self.photos = photos
        self.requests = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/img/{i}", self.image)
        app.router.add_get("/copy/{i}", self.image)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def image(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = self.photos[int(request.match_info["i"])]
        return web.Response(body=body, content_type="image/jpeg")

    def catalog(self, n: int) -> list[str]:
        """n image URLs: 4/5 distinct photos, 1/5 sharing one (half same URL, half a copy)."""
        distinct = n - n // 5
        urls = [f"http://127.0.0.1:{self.port}/img/{i}" for i in range(distinct)]
        for k in range(n - distinct):
            j = (k * 7919) % distinct
            path = f"/img/{j}" if k % 2 == 0 else f"/copy/{j}?k={k}"
            urls.append(f"http://127.0.0.1:{self.port}{path}")
        return urls


@dataclass
class Run:
    seconds: float
    embedded: int
    reused: int
    downloads: int


async def reset(pool: asyncpg.Pool, urls: list[str]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("TRUNCATE product_embeddings, embedding_jobs, products CASCADE")
        rows = [(i + 1, u) for i, u in enumerate(urls)]
        await conn.executemany(
            """INSERT INTO products (product_id, url_image_s3, last_seen_at, captured_at,
                                     content_hash) VALUES ($1, $2, now(), now(), '\\x00')""",
            rows,
        )
        await conn.executemany(
            "INSERT INTO embedding_jobs (product_id, image_url) VALUES ($1, $2)", rows
        )


def make_config(dsn: str, model: Path, data: Path, **extra: str) -> config_mod.Config:
    env = {
        "DAHELL_PATHS__DATA_DIR": str(data),
        "DAHELL_DATABASE__DSN": dsn,
        "DAHELL_VECTORIZER__MODEL_DIR": str(model),
        "DAHELL_VECTORIZER__PROVIDERS": "CPUExecutionProvider",
        "DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS": "127.0.0.1",
        "DAHELL_VECTORIZER__POLL_INTERVAL_S": "0.2",
        "DAHELL_VECTORIZER__PREPROCESS_THREADS": str(CORES),
    }
    env.update({f"DAHELL_VECTORIZER__{k.upper()}": v for k, v in extra.items()})
    return config_mod.load(path=None, env=env)


async def whole_stage(
    pool: asyncpg.Pool, stage: VectorizerStage, config: config_mod.Config, cdn: Cdn, n: int
) -> Run:
    ctx = Context(
        name="vectorizer",
        config_getter=lambda: config,
        pool=pool,
        log=structlog.get_logger().bind(stage="vectorizer"),
        inbox=None,
        outboxes={},
        stopping=asyncio.Event(),
        exit_when_idle=True,
    )
    await stage._load_model(ctx)  # loaded once, outside the timing
    cdn.requests = 0
    started = time.perf_counter()
    await stage.run(ctx)
    seconds = time.perf_counter() - started
    done = await pool.fetchval("SELECT count(*) FROM product_embeddings")
    assert done == n, f"{done} of {n} embedded: {dict(ctx.counters)}"
    counts: Counter[str] = Counter()
    for (outcome, _), k in ctx.counters.items():
        counts[outcome] += k
    return Run(seconds, counts["embedded"], counts["reused"], cdn.requests)


async def compare(
    name: str,
    pool: asyncpg.Pool,
    dsn: str,
    model: Path,
    tmp: Path,
    cdn: Cdn,
    n: int,
    rounds: int,
    **extra: str,
) -> list[tuple[str, str, str]]:
    urls = cdn.catalog(n)
    stage = VectorizerStage()
    runs: dict[bool, Run] = {}
    order = [False, True] if rounds == 1 else [False, True, True, False] * (rounds // 2)
    for dedup in order:  # alternating, best of each: the machine is shared
        await reset(pool, urls)
        config = make_config(dsn, model, tmp / "data", dedup_images=str(dedup).lower(), **extra)
        run = await whole_stage(pool, stage, config, cdn, n)
        print(f"{name} dedup={dedup}: {run}", flush=True)  # partial results survive a timeout
        if dedup not in runs or run.seconds < runs[dedup].seconds:
            runs[dedup] = run
    rows = []
    for dedup, run in runs.items():
        hours = run.seconds * CATALOG / n / 3600
        rows.append(
            (
                f"{name}, {n:,} products, dedup {'on' if dedup else 'off'}",
                f"{run.seconds:.1f} s ({n / run.seconds:.3g} products/s)",
                f"inferences {run.embedded:,}, reused {run.reused:,}, "
                f"downloads {run.downloads:,}; {run.seconds / max(run.embedded, 1):.3g} s per "
                f"inference (shows the machine's load); {CATALOG:,} products: {hours:.2f} h",
            )
        )
    off, on = runs[False], runs[True]
    rows.append(
        (
            f"{name}: without / with dedup",
            f"{off.seconds / on.seconds:.2f}x faster",
            f"inferences {off.embedded / max(on.embedded, 1):.2f}x, "
            f"downloads {off.downloads / max(on.downloads, 1):.2f}x fewer",
        )
    )
    return rows


async def main(args: argparse.Namespace) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    tiny_n = 500 if args.quick else args.tiny_products
    big_n = 20 if args.quick else args.so400m_products
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        server = await asyncio.to_thread(db.start_embedded, tmp / "pg-root")
        cdn = Cdn(distinct_photos(max(tiny_n, big_n)))
        await cdn.start()
        try:
            await db.apply_migrations(server.dsn)
            pool = await asyncpg.create_pool(
                server.dsn, min_size=2, max_size=8, init=db._init_connection
            )
            tiny = tmp / "tiny"
            tiny.mkdir()
            for name in ("model.onnx", "manifest.json"):
                (tiny / name).write_bytes((TINY / name).read_bytes())
            if not args.skip_tiny:
                results += await compare(
                    "tiny", pool, server.dsn, tiny, tmp, cdn, tiny_n, args.rounds
                )
            if not args.skip_so400m:
                await pool.execute("TRUNCATE product_embeddings")  # the column is resized
                model = await asyncio.to_thread(build_so400m_model, tmp, args.so400m_precision)
                results += await compare(
                    f"so400m-384 {args.so400m_precision}",
                    pool,
                    server.dsn,
                    model,
                    tmp,
                    cdn,
                    big_n,
                    1,
                    batch_size=str(args.batch),
                    claim_batch_size=str(big_n),
                )
            await pool.close()
        finally:
            assert cdn.runner is not None
            await cdn.runner.cleanup()
            server.stop()
    print_table(results)
    return 0


def build_so400m_model(tmp: Path, precision: str) -> Path:
    _, fp32 = build_so400m(tmp / "so400m")
    model: Path = fp32 if precision == "fp32" else build_int8(fp32, tmp / "so400m" / "int8")
    return model


def print_table(results: list[tuple[str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"identical photos embedded once ({CORES} cores, CPU)")
    for column in ("run", "time", "work"):
        table.add_column(column)
    for row in results:
        table.add_row(*row)
    Console(width=160).print(table)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tiny-products", type=int, default=5000)
    parser.add_argument("--so400m-products", type=int, default=200)
    parser.add_argument("--so400m-precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=2, help="tiny runs per mode, alternating (best kept)"
    )
    parser.add_argument("--skip-so400m", action="store_true")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--quick", action="store_true", help="500 tiny, 20 so400m products")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments: Any = parse(sys.argv[1:])
    sys.exit(asyncio.run(main(arguments)))
