"""`dahell top` (as a process) and the research HTTP endpoints (a real aiohttp server)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dahell.config import Config
from dahell.research import api as research_api
from tests.integration import research_history as h

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(make_config: Any, pg_dsn: str) -> Config:
    return make_config(pg_dsn)  # type: ignore[no-any-return]


@pytest.fixture
async def history(pool: asyncpg.Pool, config: Config, tmp_path: Path) -> asyncpg.Pool:
    await h.load_history(pool, config, tmp_path)
    return pool


def top(pg_dsn: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DAHELL_DATABASE__DSN": pg_dsn,
        "DAHELL_PATHS__DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    env.pop("DAHELL_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "dahell", "top", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_top_json_is_one_array_with_the_contract(
    history: asyncpg.Pool, pg_dsn: str, tmp_path: Path
) -> None:
    out = top(pg_dsn, tmp_path, "--json", "--limit", "3")
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert [i["product_id"] for i in items] == [101, 202, 102]
    assert items[0]["units_per_day_30d"] == 5.0 and items[0]["days_observed"] == 9.0
    assert items[0]["sale_price"] == 50_000 and items[0]["margin_pct"] == 60.0


async def test_top_csv_has_a_header_row(history: asyncpg.Pool, pg_dsn: str, tmp_path: Path) -> None:
    out = top(pg_dsn, tmp_path, "--csv", "--by", "margin", "--min-margin", "61")
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0][:3] == ["product_id", "title", "supplier_id"]
    assert [r[0] for r in rows[1:]] == ["202"]


async def test_top_table_is_spanish_with_pesos(
    history: asyncpg.Pool, pg_dsn: str, tmp_path: Path
) -> None:
    out = top(pg_dsn, tmp_path, "--limit", "2")
    assert out.returncode == 0, out.stderr
    assert "Más vendidos" in out.stdout and "$ 50.000" in out.stdout
    english = top(pg_dsn, tmp_path, "--limit", "2", "--lang", "en")
    assert "Best sellers" in english.stdout and "$ 50,000" in english.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--by", "popularity"], "invalid choice"),
        (["--at", "yesterday"], "ISO 8601"),
        (["--json", "--csv"], "not allowed with"),
        (["--limit", "0"], "between 1 and 500"),
        (["--min-margin", "lots"], "not a number"),
    ],
)
def test_top_refuses_bad_values_with_exit_2(
    pg_dsn: str, tmp_path: Path, args: list[str], needle: str
) -> None:
    out = top(pg_dsn, tmp_path, *args)
    assert out.returncode == 2
    assert needle in out.stderr


@pytest.fixture
async def client(history: asyncpg.Pool) -> Any:
    app = web.Application()
    research_api.add_routes(app, lambda: history, lambda: "https://app.dropi.co")
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_api_research_pages_and_sorts(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/research", params={"by": "sales", "limit": "2", "offset": "1"})
    assert resp.status == 200
    body = await resp.json()
    assert body["by"] == "sales" and body["total"] == 15 and body["limit"] == 2
    assert body["at"] == h.AT.isoformat() and body["pending_embeddings"] == 15
    assert [i["product_id"] for i in body["items"]] == [202, 102]
    late = await (await client.get("/api/research", params={"offset": "100"})).json()
    assert late["items"] == [] and late["total"] == 15


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"by": "x"}, "by"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"min_margin": "nan"}, "min_margin"),
        ({"at": "2026-13-45"}, "at"),
    ],
)
async def test_api_research_bad_parameter_is_400(
    client: TestClient[Any, Any], query: dict[str, str], parameter: str
) -> None:
    resp = await client.get("/api/research", params=query)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == parameter


async def test_api_product_detail_and_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/products/102")
    assert resp.status == 200
    body = await resp.json()
    assert body["product"]["product_id"] == 102 and body["product"]["sku"] == "SKU102"
    assert body["stock"][0]["series"][4] == {"at": h.CAPTURES[4].isoformat(), "stock": 100}
    assert body["group"] is None
    assert (await client.get("/api/products/999999")).status == 404
    bad = await client.get("/api/products/abc")
    assert bad.status == 400 and (await bad.json())["parameter"] == "product_id"
