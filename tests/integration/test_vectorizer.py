"""The vectorizer stage on a real PostgreSQL with the committed tiny model and a local image server.

Every image comes from an aiohttp server on 127.0.0.1 started by the test; the allow-list holds
only "127.0.0.1", so nothing here can reach another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
import structlog
from aiohttp import web
from PIL import Image

from dahell import db
from dahell.config import Config
from dahell.errors import ModelMismatch
from dahell.stages.base import Context, EmbedNudge
from dahell.stages.vectorizer import (
    VectorizerStage,
    backoff_seconds,
    embedding_column_dimension,
    is_transient,
)
from dahell.stages.vectorizer.writes import WRITE_EMBEDDINGS_SQL

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-siglip"
FAR = 10**9  # seconds: "never" as an epoch distance


# --- images --------------------------------------------------------------------------------


def picture(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (96, 72)) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid PNG whose header claims width x height pixels."""
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = crc.to_bytes(4, "big")
    return bytes(data)


def animated_gif() -> tuple[bytes, bytes]:
    """A two-frame GIF and its first frame as PNG."""
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (20, 20, 220))]
    frames[0].paste((250, 250, 0), (5, 5, 25, 20))
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    gif = buf.getvalue()
    with Image.open(io.BytesIO(gif)) as img:
        first = io.BytesIO()
        img.convert("RGB").save(first, "PNG")
    return gif, first.getvalue()


# --- the image server ----------------------------------------------------------------------


class ImageServer:
    """Serves test images and hostile answers on 127.0.0.1; records every request path."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.delay_s = 0.0
        self.failing: dict[str, int] = {}  # image name -> status to answer instead
        self.release = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/img/{name}", self._image)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/html", self._html)
        app.router.add_get("/big", self._big)
        app.router.add_get("/biglen", self._big_with_length)
        app.router.add_get("/loop/{name}", self._loop)
        app.router.add_get("/redirect/{n}", self._redirect)
        app.router.add_get("/off", self._off_list)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        self.requests[request.path_qs] += 1

    async def _image(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        name = request.match_info["name"]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if name in self.failing:
            return web.Response(status=self.failing[name])
        if name not in self.images:
            return web.Response(status=404)
        return web.Response(body=self.images[name], content_type="image/jpeg")

    async def _status(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def _slow(self, request: web.Request) -> web.Response:
        self._seen(request)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), 10)
        return web.Response(body=picture(1), content_type="image/jpeg")

    async def _html(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = b"<!doctype html><html><body>Access denied</body></html>"
        return web.Response(body=body, content_type="image/jpeg")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        """50 MB of 'JPEG', chunked (no Content-Length): the cap must cut the stream."""
        self._seen(request)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 - 4)
        try:
            for _ in range(50):
                await resp.write(chunk)
        except (ConnectionResetError, RuntimeError):
            return resp
        return resp

    async def _big_with_length(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        size = 50 * 1024 * 1024
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = size
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write(b"\xff\xd8\xff\xe0" + bytes(60_000))
        return resp

    async def _loop(self, request: web.Request) -> web.Response:
        self._seen(request)
        other = "b" if request.match_info["name"] == "a" else "a"
        raise web.HTTPFound(f"/loop/{other}")

    async def _redirect(self, request: web.Request) -> web.Response:
        self._seen(request)
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/redirect/{n - 1}" if n > 1 else "/img/red")

    async def _off_list(self, request: web.Request) -> web.Response:
        self._seen(request)
        raise web.HTTPFound(self.url("/img/red", host="localhost"))


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    srv = ImageServer()
    srv.images["red"] = picture(1)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny model (its optimised graph is saved beside it)."""
    folder = tmp_path_factory.mktemp("models") / "tiny-siglip"
    shutil.copytree(TINY, folder, ignore=shutil.ignore_patterns("*.optimized.onnx"))
    return folder


# --- helpers -------------------------------------------------------------------------------

ConfigFactory = Callable[..., Config]


def vectorizer_config(make_config: ConfigFactory, dsn: str, model: Path, **extra: str) -> Config:
    settings = {
        "VECTORIZER__MODEL_DIR": str(model),
        "VECTORIZER__PROVIDERS": "CPUExecutionProvider",
        "VECTORIZER__ALLOWED_IMAGE_HOSTS": "127.0.0.1",
        "VECTORIZER__POLL_INTERVAL_S": "0.2",
        "VECTORIZER__DOWNLOAD_TIMEOUT_S": "1.0",
        "VECTORIZER__MAX_IMAGE_BYTES": str(5 * 1024 * 1024),
        "VECTORIZER__RETRY_BACKOFF_S": "60",
        "VECTORIZER__BATCH_SIZE": "8",
        "VECTORIZER__CLAIM_BATCH_SIZE": "16",
        "VECTORIZER__DOWNLOAD_CONCURRENCY": "8",
    }
    settings.update({f"VECTORIZER__{k.upper()}": v for k, v in extra.items()})
    config: Config = make_config(dsn, **settings)
    return config


def make_context(
    pool: asyncpg.Pool, config: Config, *, exit_when_idle: bool = True, name: str = "vectorizer"
) -> Context:
    return Context(
        name="vectorizer",
        config_getter=lambda: config,
        pool=pool,
        log=structlog.get_logger().bind(stage="vectorizer", worker=name),
        inbox=asyncio.Queue(64),
        outboxes={},
        stopping=asyncio.Event(),
        exit_when_idle=exit_when_idle,
    )


async def run_until_idle(
    pool: asyncpg.Pool, config: Config, stage: VectorizerStage | None = None, timeout: float = 30
) -> Context:
    ctx = make_context(pool, config)
    await asyncio.wait_for((stage or VectorizerStage()).run(ctx), timeout)
    return ctx


async def add_products(pool: asyncpg.Pool, urls: dict[int, str | None]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for pid, url in urls.items():
            await conn.execute(
                """INSERT INTO products (product_id, title, url_image_s3, last_seen_at,
                                         captured_at, content_hash)
                   VALUES ($1, $2, $3, now(), now(), '\\x00')""",
                pid,
                f"product {pid}",
                url,
            )
            await conn.execute(
                "INSERT INTO embedding_jobs (product_id, image_url, state)"
                " VALUES ($1, $2, 'pending')",
                pid,
                url,
            )


async def jobs(pool: asyncpg.Pool) -> dict[int, asyncpg.Record]:
    rows = await pool.fetch(
        """SELECT product_id, state, reason, detail, attempts, claimed_by,
                  extract(epoch FROM next_attempt_at - now()) AS due_in
           FROM embedding_jobs"""
    )
    return {r["product_id"]: r for r in rows}


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


# --- tests ---------------------------------------------------------------------------------


async def test_tiny_model_resizes_the_fresh_column_and_embeds(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.images.update(jpeg=picture(2), png=picture(3, "PNG"), webp=picture(4, "WEBP"))
    await add_products(pool, {i: server.url(f"/img/{n}") for i, n in enumerate(server.images, 1)})
    async with pool.acquire() as conn:
        assert await embedding_column_dimension(conn) == 1152

    ctx = await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))

    async with pool.acquire() as conn:
        assert await embedding_column_dimension(conn) == 32
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'product_embeddings_visual_hnsw'"
        )
        rows = await conn.fetch("SELECT * FROM product_embeddings ORDER BY product_id")
    assert "hnsw" in index and "vector_cosine_ops" in index
    assert [r["product_id"] for r in rows] == [1, 2, 3, 4]
    sha = json.loads((model_dir / "manifest.json").read_text())["graph_sha256"]
    for row in rows:
        assert row["model_sha256"] == sha
        assert abs(float(np.linalg.norm(row["embedding_visual"].to_numpy())) - 1.0) < 1e-4
    assert {r["state"] for r in (await jobs(pool)).values()} == {"done"}
    assert ctx.counters[("embedded", "")] == 4
    assert ctx.idle


async def test_hostile_images_each_end_with_their_reason(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    jpeg = picture(5)
    gif, first_frame = animated_gif()
    server.images.update(truncated=jpeg[: len(jpeg) // 2], bomb=png_bomb(), gif=gif)
    server.images["frame"] = first_frame
    cases: dict[int, tuple[str | None, str | None]] = {
        1: (server.url("/status/404"), "http_404"),
        2: (server.url("/status/500"), "http_500"),
        3: (server.url("/slow"), "timeout"),
        4: (server.url("/html"), "not_an_image"),
        5: (server.url("/img/truncated"), "decode_error"),
        6: (server.url("/img/bomb"), "too_many_pixels"),
        7: (server.url("/big"), "too_large"),
        8: (server.url("/biglen"), "too_large"),
        9: (server.url("/loop/a"), "too_many_redirects"),
        10: ("file:///etc/passwd", "scheme_not_allowed"),
        11: (server.url("/img/red?off", host="localhost"), "host_not_allowed"),
        12: (server.url("/off"), "host_not_allowed"),
        13: (server.url("/img/gif"), None),
        14: (None, "no_image"),
        15: ("ftp://127.0.0.1/x.jpg", "scheme_not_allowed"),
        16: ("data:image/png;base64,iVBORw0KGgo=", "scheme_not_allowed"),
        17: (server.url("/redirect/3"), None),
        18: (server.url("/img/frame"), None),
        19: (server.url("/status/429"), "http_429"),
    }
    await add_products(pool, {pid: url for pid, (url, _) in cases.items()})

    started = time.monotonic()
    ctx = await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    assert time.monotonic() - started < 15

    state = await jobs(pool)
    for pid, (_, reason) in cases.items():
        row = state[pid]
        if reason is None:
            assert row["state"] == "done", (pid, dict(row))
            continue
        assert (row["state"], row["reason"]) == ("failed", reason), (pid, dict(row))
        assert row["attempts"] == 1
        if is_transient(reason):  # retried later with backoff: 60 s +- 20 %
            assert 45 < row["due_in"] < 75, (pid, row["due_in"])
        else:  # permanent: failed for good
            assert row["due_in"] > FAR, (pid, row["due_in"])
    # Refused before any connection: the server never saw the off-list URL or its redirect.
    assert server.requests["/img/red?off"] == 0
    assert server.requests["/off"] == 1 and server.requests["/img/red"] == 1  # via /redirect/3
    # The animated GIF was embedded from its first frame.
    vectors = {
        r["product_id"]: r["embedding_visual"].to_numpy()
        for r in await pool.fetch("SELECT product_id, embedding_visual FROM product_embeddings")
    }
    assert set(vectors) == {13, 17, 18}
    assert float(vectors[13] @ vectors[18]) > 0.9999
    failed = sum(n for (outcome, _), n in ctx.counters.items() if outcome == "failed")
    assert failed == 16 and ctx.counters[("embedded", "")] == 3


async def test_transient_failure_is_retried_with_growing_backoff_until_it_works(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.images["flaky"] = picture(6)
    server.failing["flaky"] = 503
    await add_products(pool, {1: server.url("/img/flaky")})
    config = vectorizer_config(make_config, pg_dsn, model_dir, max_attempts="3")
    stage = VectorizerStage()

    await run_until_idle(pool, config, stage)
    row = (await jobs(pool))[1]
    assert (row["state"], row["reason"], row["attempts"]) == ("failed", "http_503", 1)
    assert 45 < row["due_in"] < 75

    await pool.execute("UPDATE embedding_jobs SET next_attempt_at = now()")
    await run_until_idle(pool, config, stage)
    row = (await jobs(pool))[1]
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert 90 < row["due_in"] < 150  # doubled

    del server.failing["flaky"]
    await pool.execute("UPDATE embedding_jobs SET next_attempt_at = now()")
    await run_until_idle(pool, config, stage)
    row = (await jobs(pool))[1]
    assert (row["state"], row["attempts"], row["reason"]) == ("done", 3, None)
    assert server.requests["/img/flaky"] == 3


async def test_transient_failures_keep_retrying_past_max_attempts_with_a_capped_backoff(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    """A CDN outage longer than max_attempts' waits leaves the backlog retrying, not failed."""
    await add_products(pool, {1: server.url("/status/500"), 2: server.url("/slow")})
    await pool.execute("UPDATE embedding_jobs SET attempts = 7, transient_failures = 7")
    config = vectorizer_config(
        make_config, pg_dsn, model_dir, max_attempts="2", retry_backoff_max_s="600"
    )
    ctx = await run_until_idle(pool, config)
    state = await jobs(pool)
    for pid, reason in ((1, "http_500"), (2, "timeout")):
        row = state[pid]
        assert (row["state"], row["reason"], row["attempts"]) == ("failed", reason, 8)
        assert 0 < row["due_in"] <= 600, (pid, row["due_in"])  # capped, not final
    counts = await pool.fetch("SELECT transient_failures FROM embedding_jobs")
    assert {r["transient_failures"] for r in counts} == {8}
    assert ctx.counters[("failed", "http_500")] == 1


async def test_an_internal_error_still_stops_at_max_attempts(
    pool: asyncpg.Pool,
    pg_dsn: str,
    server: ImageServer,
    model_dir: Path,
    make_config: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """max_attempts keeps bounding claims that end without a transient failure."""
    from dahell.stages.vectorizer import downloads

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    await add_products(pool, {1: server.url("/img/red")})
    await pool.execute("UPDATE embedding_jobs SET attempts = 4, transient_failures = 3")
    monkeypatch.setattr(downloads, "preprocess", broken)
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir, max_attempts="2"))
    row = (await jobs(pool))[1]
    assert (row["state"], row["reason"]) == ("failed", "internal_error")
    assert row["due_in"] > FAR  # attempts 5 - transient 3 = 2 = max_attempts: final


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(1)
    for attempts, expected in ((1, 10), (2, 20), (3, 40), (4, 80)):
        assert 0.8 * expected <= backoff_seconds(attempts, 10, 1000, rng) <= 1.2 * expected
    assert backoff_seconds(30, 10, 100, rng) <= 100


async def test_a_new_image_url_resets_the_failure(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    await add_products(pool, {1: server.url("/img/missing")})
    config = vectorizer_config(make_config, pg_dsn, model_dir)
    await run_until_idle(pool, config)
    assert (await jobs(pool))[1]["reason"] == "http_404"

    # What the loader does when a product's image URL changes.
    await pool.execute(
        """UPDATE embedding_jobs SET image_url = $1, state = 'pending', attempts = 0,
                  reason = NULL, detail = NULL, next_attempt_at = now()""",
        server.url("/img/red"),
    )
    await run_until_idle(pool, config)
    row = (await jobs(pool))[1]
    assert (row["state"], row["attempts"]) == ("done", 1)
    stored = await pool.fetchval("SELECT image_url FROM product_embeddings WHERE product_id = 1")
    assert stored == server.url("/img/red")


async def test_an_image_changed_while_in_flight_is_embedded_from_its_new_url(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.images["new"] = picture(9)
    server.delay_s = 0.5
    await add_products(pool, {1: server.url("/img/red")})
    ctx = make_context(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    task = asyncio.create_task(VectorizerStage().run(ctx))

    async def claimed() -> bool:
        return bool(server.requests["/img/red"])

    await wait_for(claimed)
    await pool.execute(
        """UPDATE embedding_jobs SET image_url = $1, state = 'pending', attempts = 0,
                  next_attempt_at = now()""",
        server.url("/img/new"),
    )
    await asyncio.wait_for(task, 20)
    stored = await pool.fetchval("SELECT image_url FROM product_embeddings WHERE product_id = 1")
    assert stored == server.url("/img/new")
    assert ctx.counters[("discarded", "claim_lost")] == 1
    assert ctx.counters[("embedded", "")] == 1


async def test_the_decoded_memory_cap_is_a_setting(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    # 600 x 600 RGB: 1.08 MB decoded, well within the pixel cap, over a 1 MB memory cap.
    server.images["big"] = picture(3, "PNG", (600, 600))
    await add_products(pool, {1: server.url("/img/big"), 2: server.url("/img/red")})
    config = vectorizer_config(make_config, pg_dsn, model_dir, max_decoded_bytes="1000000")
    await asyncio.wait_for(VectorizerStage().run(make_context(pool, config)), 30)
    rows = {r["product_id"]: r for r in await pool.fetch("SELECT * FROM embedding_jobs")}
    assert (rows[1]["state"], rows[1]["reason"]) == ("failed", "decoded_too_large")
    assert rows[2]["state"] == "done"


async def test_one_write_holding_a_products_old_and_new_image_keeps_the_new_one(
    pool: asyncpg.Pool,
) -> None:
    # A product whose image changed while its old one was in flight: both outcomes can reach
    # the same write batch; only the one for the URL the job now holds is written.
    await add_products(pool, {1: "https://cdn.example/new.jpg"})
    await pool.execute("UPDATE embedding_jobs SET state = 'claimed', claimed_by = 'r1'")
    dim = 1152
    vectors = np.concatenate([np.full(dim, 1.0), np.full(dim, 2.0)]).astype(np.float32)
    written = await pool.fetch(
        WRITE_EMBEDDINGS_SQL,
        [1, 1],
        ["https://cdn.example/old.jpg", "https://cdn.example/new.jpg"],
        vectors,
        dim,
        "r1",
        "model",
        [b"old", b"new"],
    )
    assert [r["product_id"] for r in written] == [1]
    stored = await pool.fetchrow("SELECT image_url, embedding_visual FROM product_embeddings")
    assert stored["image_url"] == "https://cdn.example/new.jpg"
    assert stored["embedding_visual"].to_numpy()[0] == 2.0


async def test_an_expired_lease_of_a_dead_worker_is_reclaimed(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    await add_products(pool, {i: server.url(f"/img/red?{i}") for i in range(1, 6)})
    # A worker claimed these and died: its lease runs for 1.5 s more.
    await pool.execute(
        """UPDATE embedding_jobs SET state = 'claimed', claimed_by = 'dead:1:x', attempts = 1,
                  lease_until = now() + interval '1.5 s', next_attempt_at = now() + interval '1.5 s'
           WHERE product_id <= 3"""
    )
    started = time.monotonic()
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    assert time.monotonic() - started > 1.0  # waited for the lease, did not steal it
    state = await jobs(pool)
    assert {r["state"] for r in state.values()} == {"done"}
    assert [state[i]["attempts"] for i in range(1, 6)] == [2, 2, 2, 1, 1]
    assert sum(server.requests.values()) == 5


async def test_a_lease_that_expired_max_attempts_times_fails_for_good(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    await add_products(pool, {1: server.url("/img/red")})
    await pool.execute(
        """UPDATE embedding_jobs SET state = 'claimed', claimed_by = 'dead:1:x', attempts = 2,
                  lease_until = now() - interval '1 s', next_attempt_at = now() - interval '1 s'"""
    )
    ctx = await run_until_idle(
        pool, vectorizer_config(make_config, pg_dsn, model_dir, max_attempts="2")
    )
    row = (await jobs(pool))[1]
    assert (row["state"], row["reason"]) == ("failed", "lease_expired")
    assert row["due_in"] > FAR and server.requests["/img/red"] == 0
    assert ctx.counters[("failed", "lease_expired")] == 1


async def test_two_workers_embed_each_product_exactly_once(
    pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.delay_s = 0.02
    n = 80
    pools = [
        await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4, init=db._init_connection)
        for _ in range(2)
    ]
    try:
        await add_products(pools[0], {i: server.url(f"/img/red?{i}") for i in range(1, n + 1)})
        config = vectorizer_config(make_config, pg_dsn, model_dir, claim_batch_size="4")
        contexts = [make_context(p, config, name=f"w{i}") for i, p in enumerate(pools)]
        await asyncio.wait_for(
            asyncio.gather(*(VectorizerStage().run(c) for c in contexts)), timeout=60
        )
        embedded = [
            sum(n for (outcome, _), n in c.counters.items() if outcome in ("embedded", "reused"))
            for c in contexts
        ]
        assert sum(embedded) == n, embedded  # how they split it depends on timing
        assert all(count == 1 for count in server.requests.values())
        assert len(server.requests) == n
        assert await pools[0].fetchval("SELECT count(*) FROM product_embeddings") == n
        assert await pools[0].fetchval("SELECT max(attempts) FROM embedding_jobs") == 1
    finally:
        for p in pools:
            await p.close()


async def test_a_worker_cancelled_mid_batch_loses_nothing(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.delay_s = 0.1
    n = 40
    await add_products(pool, {i: server.url(f"/img/red?{i}") for i in range(1, n + 1)})
    config = vectorizer_config(make_config, pg_dsn, model_dir, lease_s="1.5", claim_batch_size="8")
    task = asyncio.create_task(VectorizerStage().run(make_context(pool, config)))

    async def some_done() -> bool:
        done = await pool.fetchval("SELECT count(*) FROM embedding_jobs WHERE state = 'done'")
        return bool(done)

    await wait_for(some_done)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    held = await pool.fetchval("SELECT count(*) FROM embedding_jobs WHERE state = 'claimed'")
    assert held > 0  # the dead worker's claims are still leased: nothing was released

    server.delay_s = 0
    await run_until_idle(pool, config)
    assert await pool.fetchval("SELECT count(*) FROM product_embeddings") == n
    assert {r["state"] for r in (await jobs(pool)).values()} == {"done"}


async def test_a_graceful_stop_returns_quickly_and_releases_unfinished_claims(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.delay_s = 0.3
    n = 60
    await add_products(pool, {i: server.url(f"/img/red?{i}") for i in range(1, n + 1)})
    config = vectorizer_config(make_config, pg_dsn, model_dir, download_concurrency="4")
    ctx = make_context(pool, config, exit_when_idle=False)
    task = asyncio.create_task(VectorizerStage().run(ctx))

    async def some_done() -> bool:
        return bool(ctx.counters[("embedded", "")])

    await wait_for(some_done)
    ctx.stopping.set()
    started = time.monotonic()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 5
    state = await jobs(pool)
    assert {r["state"] for r in state.values()} <= {"done", "pending"}
    pending = [r for r in state.values() if r["state"] == "pending"]
    assert pending and all(r["attempts"] == 0 and r["claimed_by"] is None for r in pending)
    done = [r for r in state.values() if r["state"] == "done"]
    assert len(done) == await pool.fetchval("SELECT count(*) FROM product_embeddings")


async def test_a_nudge_wakes_the_stage_before_its_poll(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    config = vectorizer_config(make_config, pg_dsn, model_dir, poll_interval_s="60")
    ctx = make_context(pool, config, exit_when_idle=False)
    task = asyncio.create_task(VectorizerStage().run(ctx))
    try:

        async def idle() -> bool:
            return ctx.idle

        await wait_for(idle)
        await add_products(pool, {1: server.url("/img/red")})
        assert ctx.inbox is not None
        ctx.inbox.put_nowait(EmbedNudge(1))

        async def embedded() -> bool:
            return bool(ctx.counters[("embedded", "")])

        await wait_for(embedded, timeout=30)  # well within poll_interval_s (60 s)
        await wait_for(idle)
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)


def write_other_model(folder: Path, dim: int) -> None:
    """A stand-in graph of another dimension: mean-pooled pixels through a fixed projection."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    manifest = json.loads((TINY / "manifest.json").read_text())
    size = manifest["image_size"]
    weights = np.random.default_rng(0).standard_normal((3 * size * size, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["pooler_output"]),
        ],
        "other",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["n", dim])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    import hashlib

    manifest["dim"] = dim
    manifest["graph_sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


async def test_a_model_of_another_dimension_parks_the_stage(
    pool: asyncpg.Pool,
    pg_dsn: str,
    server: ImageServer,
    model_dir: Path,
    make_config: Any,
    tmp_path: Path,
) -> None:
    await add_products(pool, {1: server.url("/img/red")})
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    other = tmp_path / "other-model"
    write_other_model(other, 16)

    with pytest.raises(ModelMismatch) as caught:
        await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, other))
    assert caught.value.reason == "model_dimension_mismatch"
    assert "gives 16" in caught.value.detail and "holds 32 with 1 embeddings" in caught.value.detail
    async with pool.acquire() as conn:
        assert await embedding_column_dimension(conn) == 32

    # With no embeddings left, the same model resizes the column and runs.
    await pool.execute("TRUNCATE product_embeddings")
    await pool.execute("UPDATE embedding_jobs SET state = 'pending', next_attempt_at = now()")
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, other))
    async with pool.acquire() as conn:
        assert await embedding_column_dimension(conn) == 16
    assert await pool.fetchval("SELECT count(*) FROM product_embeddings") == 1


# --- identical photos, useful first, the backlog -----------------------------------------


async def embedded_vectors(pool: asyncpg.Pool) -> dict[int, np.ndarray]:
    rows = await pool.fetch("SELECT product_id, embedding_visual FROM product_embeddings")
    return {r["product_id"]: r["embedding_visual"].to_numpy() for r in rows}


def metrics_text(ctx: Context) -> str:
    """What /metrics shows for this stage's counters (the supervisor's collector, no server)."""
    from types import SimpleNamespace

    from dahell.metrics import Metrics
    from dahell.stages.base import StageState

    runtime = SimpleNamespace(ctx=ctx, state=StageState.RUNNING, restarts=0, disk_full=False)
    supervisor = SimpleNamespace(
        runtimes={"vectorizer": runtime}, queues={}, healthy=lambda: (True, [])
    )
    return Metrics(supervisor).render().decode()  # type: ignore[arg-type]


@pytest.mark.parametrize("claim_batch_size", ["1", "16"])
async def test_identical_photos_are_downloaded_and_embedded_once(
    pool: asyncpg.Pool,
    pg_dsn: str,
    server: ImageServer,
    model_dir: Path,
    make_config: Any,
    claim_batch_size: str,
) -> None:
    server.images.update(a=picture(11), copy=picture(11), b=picture(12))
    await add_products(
        pool,
        {
            1: server.url("/img/a"),
            2: server.url("/img/a"),  # same URL
            3: server.url("/img/copy"),  # same bytes under another URL
            4: server.url("/img/b"),
            5: server.url("/img/a"),
        },
    )
    config = vectorizer_config(make_config, pg_dsn, model_dir, claim_batch_size=claim_batch_size)
    ctx = await run_until_idle(pool, config)

    assert ctx.counters[("embedded", "")] == 2  # a and b: the only inferences
    reused = {r: n for (o, r), n in ctx.counters.items() if o == "reused" and n}
    assert sum(reused.values()) == 3 and set(reused) <= {"same_url", "same_bytes"}
    assert reused.get("same_bytes") == 1  # /img/copy
    assert server.requests["/img/a"] == 1 and server.requests["/img/copy"] == 1
    vectors = await embedded_vectors(pool)
    assert set(vectors) == {1, 2, 3, 4, 5}
    for pid in (2, 3, 5):
        assert np.array_equal(vectors[pid], vectors[1])
    hashes = dict(await pool.fetch("SELECT product_id, image_sha256 FROM embedding_jobs"))
    assert hashes[1] == hashes[2] == hashes[3] == hashes[5] != hashes[4]
    import hashlib

    assert hashes[1] == hashlib.sha256(picture(11)).digest()

    assert 'outcome="reused",reason="same_bytes",stage="vectorizer"} 1.0' in metrics_text(ctx)

    # Later: a new product with a known URL costs neither a download nor an inference.
    await add_products(pool, {6: server.url("/img/b")})
    ctx = await run_until_idle(pool, config)
    assert ctx.counters[("reused", "same_url")] == 1 and not ctx.counters[("embedded", "")]
    assert server.requests["/img/b"] == 1
    assert np.array_equal((await embedded_vectors(pool))[6], vectors[4])


async def test_without_dedup_every_photo_is_embedded(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.images.update(a=picture(11), copy=picture(11))
    urls = {1: "/img/a", 2: "/img/a", 3: "/img/copy"}
    await add_products(pool, {pid: server.url(u) for pid, u in urls.items()})
    config = vectorizer_config(make_config, pg_dsn, model_dir, dedup_images="false")
    ctx = await run_until_idle(pool, config)
    assert ctx.counters[("embedded", "")] == 3
    assert server.requests["/img/a"] == 2
    hashes = await pool.fetch("SELECT DISTINCT image_sha256 FROM embedding_jobs")
    assert len(hashes) == 1 and hashes[0]["image_sha256"] is not None


async def test_a_failure_after_download_keeps_the_hash_and_is_shared_by_its_twins(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    broken = picture(13)[:300]
    server.images.update(broken=broken, twin=broken)
    await add_products(pool, {1: server.url("/img/broken"), 2: server.url("/img/twin")})
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    rows = await pool.fetch("SELECT state, reason, image_sha256 FROM embedding_jobs")
    assert {(r["state"], r["reason"]) for r in rows} == {("failed", "decode_error")}
    assert {r["image_sha256"] for r in rows} == {__import__("hashlib").sha256(broken).digest()}


async def add_catalog_state(
    pool: asyncpg.Pool, pid: int, *, stock: int, captured_days_ago: float, queued_ago_s: float
) -> None:
    """A product's stock and capture time, and when its job was queued."""
    await pool.execute(
        """UPDATE products SET captured_at = now() - make_interval(days => $2::int),
                  last_seen_at = now() - make_interval(days => $2::int) WHERE product_id = $1""",
        pid,
        int(captured_days_ago),
    )
    await pool.execute(
        """INSERT INTO product_stock (product_id, variation_id, warehouse_id, stock_qty,
                                      snapshot_at) VALUES ($1, 0, 1, $2, now())
           ON CONFLICT DO NOTHING""",
        pid,
        stock,
    )
    await pool.execute(
        """UPDATE embedding_jobs SET state = 'pending',
                  next_attempt_at = now() - make_interval(secs => $2) WHERE product_id = $1""",
        pid,
        queued_ago_s,
    )


async def embed_order(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch("SELECT product_id FROM product_embeddings ORDER BY processed_at")
    return [r["product_id"] for r in rows]


async def test_a_product_in_stock_and_just_changed_is_embedded_before_a_stale_one_queued_earlier(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    server.images.update({f"p{i}": picture(20 + i) for i in range(1, 6)})
    config = vectorizer_config(
        make_config,
        pg_dsn,
        model_dir,
        claim_batch_size="1",
        download_concurrency="1",
        batch_size="1",
    )
    await add_products(pool, {4: server.url("/img/p4")})
    await run_until_idle(pool, config)  # 4 has an embedding: its next one is a re-embed
    await add_products(pool, {i: server.url(f"/img/p{i}") for i in range(1, 4)})
    await pool.execute(
        "UPDATE embedding_jobs SET image_url = $1 WHERE product_id = 4", server.url("/img/p5")
    )
    # 1: stale and empty, queued an hour before the others. 2: in stock, just changed.
    # 3: stale and empty but queued 30 hours ago: waited longer than any bonus, goes first.
    # 4: in stock, just changed, but a re-embed: after 2, before 1.
    await add_catalog_state(pool, 1, stock=0, captured_days_ago=30, queued_ago_s=3600)
    await add_catalog_state(pool, 2, stock=5, captured_days_ago=0, queued_ago_s=0)
    await add_catalog_state(pool, 3, stock=0, captured_days_ago=30, queued_ago_s=30 * 3600)
    await add_catalog_state(pool, 4, stock=5, captured_days_ago=0, queued_ago_s=0)

    await run_until_idle(pool, config)
    assert await embed_order(pool) == [3, 2, 4, 1]


async def test_claim_walks_the_priority_index_at_100k_pending_rows(pool: asyncpg.Pool) -> None:
    await pool.execute(
        """INSERT INTO embedding_jobs (product_id, image_url, next_attempt_at)
           SELECT g, 'http://x/' || g, now() - make_interval(secs => g % 5000)
           FROM generate_series(1, 100000) AS g"""
    )
    from dahell.stages.vectorizer import CLAIM_SQL, RANK_SQL

    while (await pool.execute(RANK_SQL, 5000)).endswith(" 5000"):
        pass
    assert await pool.fetchval("SELECT count(*) FROM embedding_jobs WHERE priority_at IS NULL") == 0
    await pool.execute("ANALYZE embedding_jobs")

    select = CLAIM_SQL.split("(", 1)[1].rsplit(")", 1)[0].split("FOR UPDATE")[0]
    select = select.replace("$1", "64").replace("$3", "5")
    plan = "\n".join(r[0] for r in await pool.fetch("EXPLAIN ANALYZE " + select))
    assert "embedding_jobs_priority_idx" in plan, plan
    assert "Sort" not in plan and "rows=64" in plan, plan


async def test_status_and_backlog_name_images_waiting_for_a_retry_by_reason(
    pool: asyncpg.Pool, pg_dsn: str, server: ImageServer, model_dir: Path, make_config: Any
) -> None:
    from dahell.embedding_backlog import pending_count
    from dahell.status_command import gather_counts

    server.images.update(a=picture(31), copy=picture(31))
    urls = {1: "/status/503", 2: "/slow", 3: "/status/404", 4: "/img/a", 5: "/img/copy"}
    await add_products(pool, {pid: server.url(u) for pid, u in urls.items()})
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    await add_products(pool, {6: server.url("/img/a")})  # queued, not yet claimed

    counts = (await gather_counts(pool))["embeddings"]
    assert counts["retrying"] == 2
    assert counts["retrying_by_reason"] == {"http_503": 1, "timeout": 1}
    assert counts["failed_by_reason"] == {"http_503": 1, "timeout": 1, "http_404": 1}
    assert counts["waiting"] == 3 and counts["identical_photos"] == 1
    async with pool.acquire() as conn:
        assert await pending_count(conn) == 3  # 6 pending + 1 and 2 retrying; 404 is final
    assert await pending_count(pool) == 3

    env = {**os.environ, "DAHELL_DATABASE__DSN": pg_dsn, "DAHELL_HTTP__ENABLED": "false"}
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "dahell", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # rich wraps a title to its table's width
    assert "embeddings waiting for a retry, by reason" in text
    assert "http_503" in text and "embeddings retrying" in text


async def test_reembed_drops_every_embedding_and_queues_every_product(
    pool: asyncpg.Pool,
    pg_dsn: str,
    server: ImageServer,
    model_dir: Path,
    make_config: Any,
    tmp_path: Path,
) -> None:
    from dahell.embedding_backlog import reset_embeddings

    server.images.update(a=picture(41), b=picture(42))
    await add_products(pool, {1: server.url("/img/a"), 2: server.url("/img/b"), 3: None})
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, model_dir))
    other = tmp_path / "other-model"
    write_other_model(other, 16)
    with pytest.raises(ModelMismatch):
        await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, other))

    command = [sys.executable, "-m", "dahell", "reembed"]
    env = {**os.environ, "DAHELL_DATABASE__DSN": pg_dsn}
    asked = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )
    assert asked.returncode == 2 and "would drop 2 embeddings" in asked.stderr
    assert await pool.fetchval("SELECT count(*) FROM product_embeddings") == 2
    done = await asyncio.to_thread(
        subprocess.run, [*command, "--yes"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "dropped 2 embeddings, queued 3 products" in done.stdout
    assert await reset_embeddings(pool) == (0, 3)  # the same, again: nothing left to drop
    await run_until_idle(pool, vectorizer_config(make_config, pg_dsn, other))
    async with pool.acquire() as conn:
        assert await embedding_column_dimension(conn) == 16
    assert await pool.fetchval("SELECT count(*) FROM product_embeddings") == 2
    state = await jobs(pool)
    assert state[3]["reason"] == "no_image" and state[1]["state"] == "done"
