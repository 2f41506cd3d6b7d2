"""Several `python -m dahell run --stages vectorizer` processes on one database.

Each process is a real daemon (supervisor, signals, its own pool); the images come from an
aiohttp server on 127.0.0.1 inside the test process, which counts every request.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import psutil
import pytest
from aiohttp import web
from PIL import Image

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-siglip"


class ImageServer:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests: Counter[str] = Counter()
        self.delay_s = 0.0
        self.port = 0
        # While set and not yet open, requests wait here; `waiting` holds their client ports.
        self.gate: asyncio.Event | None = None
        self.waiting: set[int] = set()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/img/{name}", self.image)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def image(self, request: web.Request) -> web.Response:
        self.requests[request.path_qs] += 1
        if self.gate is not None:
            assert request.transport is not None
            self.waiting.add(request.transport.get_extra_info("peername")[1])
            await self.gate.wait()
        await asyncio.sleep(self.delay_s)
        return web.Response(body=self.body, content_type="image/jpeg")


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    srv = ImageServer(buf.getvalue())
    await srv.start()
    yield srv
    assert srv.runner is not None
    await srv.runner.cleanup()


async def add_products(dsn: str, urls: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            """INSERT INTO products (product_id, url_image_s3, last_seen_at, captured_at,
                                     content_hash) VALUES ($1, $2, now(), now(), '\\x00')""",
            list(enumerate(urls, 1)),
        )
        await conn.executemany(
            "INSERT INTO embedding_jobs (product_id, image_url) VALUES ($1, $2)",
            list(enumerate(urls, 1)),
        )
    finally:
        await conn.close()


def daemon_env(tmp_path: Path, dsn: str, name: str, **vectorizer: str) -> dict[str, str]:
    model = tmp_path / "model"
    if not model.exists():
        shutil.copytree(TINY, model, ignore=shutil.ignore_patterns("*.optimized.onnx"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAHELL_")}
    env.update(
        DAHELL_PATHS__DATA_DIR=str(tmp_path / name),
        DAHELL_DATABASE__DSN=dsn,
        DAHELL_HTTP__ENABLED="false",
        DAHELL_LOG__LEVEL="info",
        DAHELL_VECTORIZER__MODEL_DIR=str(model),
        DAHELL_VECTORIZER__PROVIDERS="CPUExecutionProvider",
        DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS="127.0.0.1",
        DAHELL_VECTORIZER__POLL_INTERVAL_S="0.2",
        DAHELL_VECTORIZER__CLAIM_BATCH_SIZE="4",
        DAHELL_VECTORIZER__BATCH_SIZE="4",
    )
    env.update({f"DAHELL_VECTORIZER__{k.upper()}": v for k, v in vectorizer.items()})
    return env


async def start_daemon(
    tmp_path: Path, env: dict[str, str], *extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dahell",
        "run",
        "--stages",
        "vectorizer",
        *extra,
        cwd=tmp_path,  # no ./dahell.toml: the environment is the whole configuration
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def embedded_count(output: bytes) -> int:
    """Products a daemon wrote an embedding for: inferred, or reused (all photos are alike)."""
    total = 0
    for line in output.decode(errors="replace").splitlines():
        if '"batch_embedded"' in line or '"embeddings_reused"' in line:
            total += int(json.loads(line)["count"])
    return total


async def until_each_holds_a_download(
    server: ImageServer, procs: list[asyncio.subprocess.Process], timeout: float = 90.0
) -> None:
    """Wait until every process has a request waiting at the server's gate (so has claims).

    Which process a request came from is told by its client port: a socket of that process.
    """
    deadline = time.monotonic() + timeout
    while True:
        ports = set(server.waiting)
        holders = {
            proc.pid
            for proc in procs
            if any(c.laddr.port in ports for c in psutil.Process(proc.pid).net_connections("tcp"))
        }
        if len(holders) == len(procs):
            return
        running = all(proc.returncode is None for proc in procs)
        assert running and time.monotonic() < deadline, f"downloading: {holders} of {procs}"
        await asyncio.sleep(0.1)


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


@pytest.mark.slow
async def test_two_daemons_embed_each_product_exactly_once(
    pg_dsn: str, server: ImageServer, tmp_path: Path
) -> None:
    n = 80
    server.delay_s = 0.03
    # Both must take part however slowly either starts: downloads wait until each holds one.
    server.gate = asyncio.Event()
    await add_products(pg_dsn, [f"http://127.0.0.1:{server.port}/img/p?{i}" for i in range(n)])
    procs = [
        await start_daemon(tmp_path, daemon_env(tmp_path, pg_dsn, f"w{i}"), "--exit-when-idle")
        for i in range(2)
    ]
    communicated = asyncio.gather(*(p.communicate() for p in procs))
    await until_each_holds_a_download(server, procs)
    server.gate.set()
    outputs = await asyncio.wait_for(communicated, 90)
    for proc, (out, _) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    per_process = [embedded_count(out) for out, _ in outputs]
    assert sum(per_process) == n and min(per_process) > 0, per_process
    assert len(server.requests) == n and set(server.requests.values()) == {1}
    assert await count(pg_dsn, "SELECT count(*) FROM product_embeddings") == n
    assert await count(pg_dsn, "SELECT count(*) FROM embedding_jobs WHERE state <> 'done'") == 0


@pytest.mark.slow
async def test_a_daemon_killed_mid_batch_loses_nothing(
    pg_dsn: str, server: ImageServer, tmp_path: Path
) -> None:
    n = 40
    server.delay_s = 0.25
    await add_products(pg_dsn, [f"http://127.0.0.1:{server.port}/img/p?{i}" for i in range(n)])
    env = daemon_env(tmp_path, pg_dsn, "victim", lease_s="2", download_concurrency="4")
    victim = await start_daemon(tmp_path, env)
    deadline = time.monotonic() + 60
    while await count(pg_dsn, "SELECT count(*) FROM embedding_jobs WHERE state = 'done'") == 0:
        assert time.monotonic() < deadline and victim.returncode is None
        await asyncio.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    await victim.communicate()
    held = await count(pg_dsn, "SELECT count(*) FROM embedding_jobs WHERE state = 'claimed'")
    assert held > 0  # killed while holding claims

    server.delay_s = 0
    env = daemon_env(tmp_path, pg_dsn, "heir", lease_s="2")
    heir = await start_daemon(tmp_path, env, "--exit-when-idle")
    out, _ = await asyncio.wait_for(heir.communicate(), 60)
    assert heir.returncode == 0, out.decode(errors="replace")[-3000:]
    assert await count(pg_dsn, "SELECT count(*) FROM product_embeddings") == n
    assert await count(pg_dsn, "SELECT count(*) FROM embedding_jobs WHERE state <> 'done'") == 0
