"""Vectorizer benchmark: images from a local server into PostgreSQL, in one run.

    python tests/benchmarks/bench_vectorizer.py [--tiny-images 400] [--so400m-images 32]
                                                [--skip-so400m]

Measures, on an embedded PostgreSQL in a temp folder and an aiohttp image server on 127.0.0.1:

- tiny model (committed models/tiny-siglip; the run is I/O bound):
  * fetch + decode + preprocess alone (the stage's fetcher and preprocess threads, no model, no
    database): images/s and images/s per core (target >= 100);
  * (b) the whole VectorizerStage: claim, download, preprocess, inference, batched writes;
  * (c) the seed's pipeline: 20-thread downloads of a batch of 50, then transformers'
    SiglipImageProcessor + torch SiglipVisionModel (the tiny model's torch twin, same builder and
    seed), then one INSERT + one UPDATE per row; phases in sequence;
  * (b) / (c).
- so400m-shaped random tower (exported here into a temp folder, ~1-2 min; the model is the bound
  on CPU): (a) the model alone on preprocessed tensors, (b) the whole stage; (b) / (a), target
  >= 0.9; cold start to the first embedding, ONNX Runtime (the saved optimised graph, as every
  start after the first) against torch `SiglipVisionModel.from_pretrained` (target ORT <= torch);
  the int8 graph (what `export-model --precision int8` makes) against fp32, model alone
  (target >= 2x).

Not collected by pytest (no test_ prefix). Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import structlog
from aiohttp import web
from PIL import Image

from dahell import config as config_mod
from dahell import db
from dahell.embedder import Embedder, load_manifest, preprocess
from dahell.fetch import FetchLimits, ImageFetcher, make_session
from dahell.stages.base import Context
from dahell.stages.vectorizer import VectorizerStage

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-siglip"
CORES = os.cpu_count() or 1
DISTINCT_IMAGES = 40


def photos(n: int, size: int = 800) -> list[bytes]:
    """Product-photo-like JPEGs: smooth colour fields with some detail, ~50-100 KB each."""
    out = []
    rng = np.random.default_rng(0)
    for _ in range(n):
        base = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 12, (size, size, 3))
        arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


class ImageServer:
    def __init__(self, images: list[bytes]) -> None:
        self.images = images
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/img/{i}", self.image)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def image(self, request: web.Request) -> web.Response:
        body = self.images[int(request.match_info["i"]) % len(self.images)]
        return web.Response(body=body, content_type="image/jpeg")

    def urls(self, n: int) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/img/{i}?p={i}" for i in range(n)]


async def reset(pool: asyncpg.Pool, urls: list[str]) -> None:
    """A catalogue of len(urls) products, all pending, no embeddings."""
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
        # Its catalogue repeats 40 photos: measure the pipeline, not the reuse (bench_dedup.py).
        "DAHELL_VECTORIZER__DEDUP_IMAGES": "false",
    }
    env.update({f"DAHELL_VECTORIZER__{k.upper()}": v for k, v in extra.items()})
    return config_mod.load(path=None, env=env)


async def whole_stage(pool: asyncpg.Pool, config: config_mod.Config, n: int) -> float:
    """(b): images/s of VectorizerStage from start to idle, model already loaded."""
    stage = VectorizerStage()
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
    await stage._load_model(ctx)  # warm: (a) and (c) exclude loading too
    started = time.perf_counter()
    await stage.run(ctx)
    seconds = time.perf_counter() - started
    done = await pool.fetchval("SELECT count(*) FROM product_embeddings")
    assert done == n, f"{done} of {n} embedded: {dict(ctx.counters)}"
    return n / seconds


async def fetch_and_preprocess(urls: list[str], model: Path, threads: int) -> float:
    """Images/s for download + decode + preprocess with the stage's own parts."""
    manifest = load_manifest(model)
    session = make_session(32, 5.0)
    fetcher = ImageFetcher(session, FetchLimits.build(20.0, 20 << 20, 3, ["127.0.0.1"]))
    pool = ThreadPoolExecutor(threads)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(32)

    async def one(url: str) -> None:
        async with gate:
            data = await fetcher.fetch(url)
            await loop.run_in_executor(pool, preprocess, data, manifest, 64_000_000)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in urls))
        return len(urls) / (time.perf_counter() - started)
    finally:
        await session.close()
        pool.shutdown()


async def seed_pipeline(pool: asyncpg.Pool, urls: list[str], tower: Path) -> float:
    """(c): the previous vectorizer's shape: download 50 (20 threads), model, row-by-row writes."""
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionModel

    processor = SiglipImageProcessor.from_pretrained(tower)
    model = SiglipVisionModel.from_pretrained(tower).eval()
    torch.set_num_threads(CORES)
    loop = asyncio.get_running_loop()

    def download(batch: list[str]) -> list[bytes]:
        def get(url: str) -> bytes:
            with urllib.request.urlopen(url, timeout=20) as resp:
                data: bytes = resp.read()
                return data

        with ThreadPoolExecutor(20) as threads:
            return list(threads.map(get, batch))

    def embed(blobs: list[bytes]) -> np.ndarray:
        images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
        inputs = processor(images=images, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs).pooler_output
        vectors: np.ndarray = torch.nn.functional.normalize(out, dim=-1).numpy()
        return vectors

    rows = await pool.fetch("SELECT product_id, image_url FROM embedding_jobs ORDER BY 1")
    started = time.perf_counter()
    for start in range(0, len(rows), 50):
        batch = rows[start : start + 50]
        blobs = await loop.run_in_executor(None, download, [r["image_url"] for r in batch])
        vectors = await loop.run_in_executor(None, embed, blobs)
        for row, vector in zip(batch, vectors, strict=True):
            await pool.execute(
                """INSERT INTO product_embeddings (product_id, embedding_visual, image_url)
                   VALUES ($1, $2, $3) ON CONFLICT (product_id) DO UPDATE
                   SET embedding_visual = EXCLUDED.embedding_visual""",
                row["product_id"],
                vector,
                row["image_url"],
            )
            await pool.execute(
                "UPDATE embedding_jobs SET state = 'done' WHERE product_id = $1", row["product_id"]
            )
    return len(rows) / (time.perf_counter() - started)


async def model_alone(model: Path, blobs: list[bytes], batch: int) -> float:
    """(a): images/s of Embedder.embed on tensors preprocessed beforehand."""
    embedder = await asyncio.to_thread(Embedder.load, model, ["CPUExecutionProvider"])
    tensors = np.stack([preprocess(b, embedder.manifest, 64_000_000) for b in blobs])
    embedder.embed(tensors[:1])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        embedder.embed(tensors[i : i + batch])
    return len(tensors) / (time.perf_counter() - started)


def build_so400m(folder: Path) -> tuple[Path, Path]:
    from dahell.export import SO400M_SHAPE, build_random_vision_model, export_model

    tower = build_random_vision_model(folder / "tower", SO400M_SHAPE, 0)
    return tower, export_model(str(tower), folder / "onnx", "fp32", False, validate=False)


def build_int8(fp32: Path, folder: Path) -> Path:
    """The fp32 graph quantised the way `export-model --precision int8` does it."""
    import json

    from dahell import export

    folder.mkdir(parents=True)
    export._convert(fp32 / "model.onnx", folder / "model.onnx", "int8")
    manifest = json.loads((fp32 / "manifest.json").read_text())
    manifest.update(precision="int8", graph_sha256=export.sha256_file(folder / "model.onnx"))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def cold_starts(model: Path, tower: Path) -> tuple[float, float]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_embedder import ort_cold_start, torch_cold_start

    return ort_cold_start(model), torch_cold_start(tower)


def build_tiny_twin(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "models"))
    from make_tiny_siglip import SEED  # the committed model's builder and seed

    from dahell.export import TINY_SHAPE, build_random_vision_model

    return build_random_vision_model(folder / "tiny-tower", TINY_SHAPE, SEED)


async def main(args: argparse.Namespace) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-vectorizer-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        server_pg = await asyncio.to_thread(db.start_embedded, tmp / "pg-root")
        images = ImageServer(photos(DISTINCT_IMAGES))
        await images.start()
        try:
            await db.apply_migrations(server_pg.dsn)
            pool = await asyncpg.create_pool(
                server_pg.dsn, min_size=2, max_size=8, init=db._init_connection
            )
            await run_tiny(args, tmp, server_pg.dsn, pool, images, results)
            if not args.skip_so400m:
                await run_so400m(args, tmp, server_pg.dsn, pool, images, results)
            await pool.close()
        finally:
            assert images.runner is not None
            await images.runner.cleanup()
            server_pg.stop()
    print_table(results)
    return 0


async def run_tiny(
    args: argparse.Namespace,
    tmp: Path,
    dsn: str,
    pool: asyncpg.Pool,
    images: ImageServer,
    results: list[tuple[str, str, str]],
) -> None:
    n = args.tiny_images
    model = tmp / "tiny"
    model.mkdir()
    for name in ("model.onnx", "manifest.json"):
        (model / name).write_bytes((TINY / name).read_bytes())
    urls = images.urls(n)
    prep = await fetch_and_preprocess(urls, model, threads=CORES)
    results.append(("tiny: download+decode+preprocess", f"{prep:.0f} img/s", ""))
    results.append(("tiny: the same per core", f"{prep / CORES:.0f} img/s/core", "target >= 100"))
    await reset(pool, urls)
    config = make_config(dsn, model, tmp / "data", preprocess_threads=str(CORES))
    b = await whole_stage(pool, config, n)
    results.append(("tiny (b): whole stage", f"{b:.0f} img/s", ""))
    await reset(pool, urls)
    c = await seed_pipeline(pool, urls, build_tiny_twin(tmp))
    results.append(("tiny (c): seed-style pipeline", f"{c:.0f} img/s", ""))
    results.append(("tiny (b) / (c)", f"{b / c:.1f}x", ""))


async def run_so400m(
    args: argparse.Namespace,
    tmp: Path,
    dsn: str,
    pool: asyncpg.Pool,
    images: ImageServer,
    results: list[tuple[str, str, str]],
) -> None:
    n = args.so400m_images
    started = time.perf_counter()
    tower, model = await asyncio.to_thread(build_so400m, tmp / "so400m")
    results.append(("so400m: build + export", f"{time.perf_counter() - started:.0f} s", ""))
    blobs = [images.images[i % len(images.images)] for i in range(n)]
    a = await model_alone(model, blobs, args.batch)
    results.append(("so400m (a): model alone", f"{a:.3f} img/s", f"batch {args.batch}"))
    await reset(pool, images.urls(n))
    config = make_config(
        dsn, model, tmp / "data", batch_size=str(args.batch), claim_batch_size=str(n)
    )
    b = await whole_stage(pool, config, n)
    results.append(("so400m (b): whole stage", f"{b:.3f} img/s", ""))
    results.append(("so400m (b) / (a)", f"{b / a:.1%}", "target >= 90%"))
    ort_s, torch_s = await asyncio.to_thread(cold_starts, model, tower)
    results.append(("so400m cold start, ORT", f"{ort_s:.1f} s", "load + first embedding"))
    results.append(("so400m cold start, torch", f"{torch_s:.1f} s", "from_pretrained + first"))
    results.append(("cold start torch / ORT", f"{torch_s / ort_s:.2f}x", "target >= 1"))
    started = time.perf_counter()
    int8 = await asyncio.to_thread(build_int8, model, tmp / "so400m" / "int8")
    results.append(("so400m: int8 quantisation", f"{time.perf_counter() - started:.0f} s", ""))
    q = await model_alone(int8, blobs, args.batch)
    results.append(("so400m int8: model alone", f"{q:.3f} img/s", f"batch {args.batch}"))
    results.append(("int8 / fp32 (a)", f"{q / a:.2f}x", "target >= 2x"))


def print_table(results: list[tuple[str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vectorizer benchmark ({CORES} cores, CPU)")
    for column in ("measure", "value", "note"):
        table.add_column(column)
    for row in results:
        table.add_row(*row)
    Console().print(table)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tiny-images", type=int, default=400)
    parser.add_argument("--so400m-images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--skip-so400m", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments: Any = parse(sys.argv[1:])
    sys.exit(asyncio.run(main(arguments)))
