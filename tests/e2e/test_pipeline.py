"""The whole pipeline as a user runs it: `python -m dahell run` against the Dropi simulator."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from dahell.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO / "models" / "tiny-siglip"
PASSWORD = "s3cret-Pass-for-e2e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
async def test_a_full_pass_loads_exactly_the_catalog_and_embeds_it(
    pg_dsn: str, tmp_path: Path
) -> None:
    sim_config = SimulatorConfig(products=120, password=PASSWORD)
    async with Simulator(sim_config) as sim:
        env = {
            **os.environ,
            "DAHELL_CONFIG": str(tmp_path / "absent-is-fine.toml"),
            "DAHELL_PATHS__DATA_DIR": str(tmp_path / "data"),
            "DAHELL_DATABASE__DSN": pg_dsn,
            "DAHELL_HTTP__LISTEN": f"127.0.0.1:{free_port()}",
            "DAHELL_SCRAPER__APP_URL": sim.app_url,
            "DAHELL_SCRAPER__API_URL": sim.api_url,
            "DAHELL_SCRAPER__EMAIL": sim_config.email,
            "DAHELL_SCRAPER__PASSWORD": PASSWORD,
            "DAHELL_SCRAPER__PAGE_SIZE": "25",
            "DAHELL_SCRAPER__REQUEST_INTERVAL_S": "0",
            "DAHELL_LOADER__IMAGE_BASE_URL": sim.cdn_url,
            "DAHELL_VECTORIZER__MODEL_DIR": str(TINY_MODEL),
            "DAHELL_VECTORIZER__PROVIDERS": "CPUExecutionProvider",
            "DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS": urlsplit(sim.cdn_url).netloc,
        }
        (tmp_path / "absent-is-fine.toml").write_text("")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dahell",
            "run",
            "--exit-when-idle",
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
        catalog_ids = {p["id"] for p in sim.catalog}
    logs = out.decode() + err.decode()
    assert proc.returncode == 0, logs[-3000:]
    assert '"pass_finished"' in logs
    assert PASSWORD not in logs
    journal = b"".join(p.read_bytes() for p in (tmp_path / "data" / "journal").iterdir())
    assert PASSWORD.encode() not in journal
    conn = await asyncpg.connect(pg_dsn)
    try:
        loaded = {r[0] for r in await conn.fetch("SELECT product_id FROM products")}
        jobs = dict(await conn.fetch("SELECT state, count(*) FROM embedding_jobs GROUP BY 1"))
        embedded = await conn.fetchval("SELECT count(*) FROM product_embeddings")
        rejected = await conn.fetchval("SELECT count(*) FROM rejects")
        grouped = await conn.fetchval(
            "SELECT count(*) FROM research_groups AS g"
            " JOIN product_embeddings AS e ON e.product_id = g.product_id"
            " AND e.processed_at = g.embedded_at"
        )
    finally:
        await conn.close()
    assert loaded == catalog_ids
    assert rejected == 0
    assert set(jobs) <= {"done", "failed"} and jobs.get("done", 0) == embedded
    assert embedded >= len(catalog_ids) * 0.9  # a few simulator images are broken on purpose
    assert grouped == embedded  # the groups stage placed every embedding before the exit
