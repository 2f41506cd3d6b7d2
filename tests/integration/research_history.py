"""A hand-made catalog history with a known answer for every research case (issue 13).

Ten daily captures, T0 = 2026-11-01 12:00 UTC .. T9 = 2026-11-10 12:00 UTC (the newest capture,
so the windows end at T9: 7 days = (T2, T9], 30 days = everything). Products:

- 101 steady:     100, 95, ..., 55 (-5 a capture)  -> 45 units (7d: 35), 9 days, 5.0/day
- 102 restock:    50, 48, 46, 44, 100, 98, ..., 90  -> 6 + 10 = 16 units (7d: 12), 9 days
- 103 two days:   seen T7..T9 only: 30, 25, 20      -> 10 units, 2 days, 5.0/day raw, but ranked
                                                       at 10/7 a day
- 104 vanished:   T0..T5: 40, 38, ..., 30, then gone -> 10 units (7d: 6), 5 days; no fall to 0
- 105 VARIABLE:   variation A 10, 9, ..., 1; B 20, 20, 25 (restock), 24, 24, ...
                  -> A 9 + B 1 = 10 units (the per-warehouse sum would say 9); 7d: 7 + 1 = 8
- 201/202/203:    one item, three suppliers (1001, 1002, 1003), sale 50.000 / 45.000 / 52.000,
                  suggested 80.000; 202 is the cheapest. Stock: 201 flat 10; 202 -2 a capture;
                  203 -1 a capture.
- 204:            starts as a fourth look-alike of 201, then its photo changes to 301's item
- 301:            alone, until 204 joins it
- 401-402-403:    a chain (401~402, 402~403, 401 too far from 403) until 402 changes: it splits
- 501/502:        byte-identical photos, no embedding: one group before any model runs
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import structlog

from dahell.config import Config
from dahell.stages.loader import Loader
from tests.factories import legacy_line, simple_product

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
CAPTURES = [T0 + timedelta(days=d) for d in range(10)]
AT = CAPTURES[-1]
DIM = 1152
DISTANCE = 0.05  # the tiny model's distances mean nothing: tests choose vectors and distance

STOCK: dict[int, list[int | None]] = {
    101: [100 - 5 * d for d in range(10)],
    102: [50, 48, 46, 44, 100, 98, 96, 94, 92, 90],
    103: [None] * 7 + [30, 25, 20],
    104: [40, 38, 36, 34, 32, 30, None, None, None, None],
    201: [10] * 10,
    202: [40 - 2 * d for d in range(10)],
    203: [20 - d for d in range(10)],
    204: [5] * 10,
    301: [5] * 10,
    401: [5] * 10,
    402: [5] * 10,
    403: [5] * 10,
    501: [5] * 10,
    502: [5] * 10,
}
VARIATION_A = [10 - d for d in range(10)]
VARIATION_B = [20, 20, 25, 24, 24, 24, 24, 24, 24, 24]
PRICES = {201: 50_000, 202: 45_000, 203: 52_000}


def _simple(pid: int, stock: int) -> dict[str, Any]:
    product = simple_product(pid, stock=stock, price=PRICES.get(pid, 50_000))
    if pid in PRICES:
        product["suggested_price"] = 80_000
    product["warehouse_product"] = [
        {
            "id": pid * 10,
            "stock": stock,
            "warehouse_id": 2444,
            "warehouse": {"id": 2444, "name": "Bodega Norte", "city": {"id": 1, "name": "Cali"}},
        }
    ]
    return product


def _variable(pid: int, a: int, b: int) -> dict[str, Any]:
    product = simple_product(pid)
    product["type"] = "VARIABLE"
    product.pop("warehouse_product")
    product.pop("suggested_price")
    product["variations"] = [
        {
            "id": pid * 100 + v,
            "sku": f"SKU{pid}-{v}",
            "stock": qty,
            "product_id": pid,
            "sale_price": 40_000,
            "suggested_price": 70_000,
            "attribute_values": [{"attribute_name": "Color", "value": f"color {v}", "id": v}],
            "warehouse_product_variation": [
                {
                    "id": pid * 1000 + v,
                    "stock": qty,
                    "warehouse_id": 2555,
                    "warehouse": {
                        "id": 2555,
                        "name": "Bodega Sur",
                        "city": {"id": 2, "name": "Medellín"},
                    },
                }
            ],
        }
        for v, qty in ((1, a), (2, b))
    ]
    return product


def capture_lines(day: int) -> list[str]:
    """The legacy lines of capture `day` (products absent that day are simply not there)."""
    stamp = CAPTURES[day].strftime("%Y-%m-%dT%H:%M:%S")
    lines = []
    for pid, series in STOCK.items():
        qty = series[day]
        if qty is not None:
            lines.append(legacy_line(_simple(pid, qty), stamp))
    lines.append(legacy_line(_variable(105, VARIATION_A[day], VARIATION_B[day]), stamp))
    return lines


async def load_history(pool: asyncpg.Pool, config: Config, folder: Path, files: int = 3) -> None:
    """Load the ten captures through the real loader, split over `files` files."""
    days = list(range(10))
    size = -(-len(days) // files)
    # Files in capture order: the loader keeps no history from a capture older than one it
    # already holds for that product, so out-of-order files would lose falls.
    chunks = [days[i : i + size] for i in range(0, len(days), size)]
    for n, chunk in enumerate(chunks):
        path = folder / f"raw_products_{n:02d}.jsonl"
        lines = [line for day in sorted(chunk) for line in capture_lines(day)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.utime(path, (1_700_000_000, 1_700_000_000))
        await load_file(pool, config, path)


async def load_file(pool: asyncpg.Pool, config: Config, path: Path) -> None:
    os.utime(path, (1_700_000_000, 1_700_000_000))
    report = await Loader(pool, lambda: config, structlog.get_logger()).load_path(path)
    assert report is not None


def unit(*parts: tuple[int, float]) -> np.ndarray:
    """A unit vector from (axis, weight) pairs."""
    v = np.zeros(DIM, dtype=np.float32)
    for axis, weight in parts:
        v[axis] += weight
    return v / np.linalg.norm(v)


FIRST_EMBEDDINGS = {
    201: unit((0, 1.0)),
    202: unit((0, 1.0), (1, 0.1)),  # 0.005 from 201
    203: unit((0, 1.0), (2, 0.2)),  # 0.019 from 201
    204: unit((0, 1.0), (3, 0.15)),  # 0.011 from 201
    301: unit((5, 1.0)),
    401: unit((7, 1.0)),
    402: unit((7, 1.0), (8, 0.3)),  # 0.042 from 401, 0.031 from 403
    403: unit((7, 1.0), (8, 0.6)),  # 0.143 from 401
}
CHANGED_EMBEDDINGS = {
    204: unit((5, 1.0), (6, 0.1)),  # now 0.005 from 301
    402: unit((9, 1.0)),  # alone: the chain 401-402-403 breaks
}


async def write_embeddings(
    pool: asyncpg.Pool, vectors: dict[int, np.ndarray], at: datetime
) -> None:
    """Embeddings as the vectorizer writes them (and their jobs done), processed at `at`."""
    for n, (pid, vector) in enumerate(sorted(vectors.items())):
        await pool.execute(
            "INSERT INTO product_embeddings (product_id, embedding_visual, processed_at)"
            " VALUES ($1, $2, $3) ON CONFLICT (product_id) DO UPDATE"
            " SET embedding_visual = excluded.embedding_visual,"
            " processed_at = excluded.processed_at",
            pid,
            vector,
            at + timedelta(milliseconds=n),
        )
        await pool.execute(
            "UPDATE embedding_jobs SET state = 'done', updated_at = now() WHERE product_id = $1",
            pid,
        )


async def write_identical_photos(pool: asyncpg.Pool) -> None:
    """501 and 502: the same photo bytes, known before any embedding."""
    await pool.execute(
        "UPDATE embedding_jobs SET image_sha256 = $1, state = 'failed', reason = 'decode_error',"
        " next_attempt_at = 'infinity', updated_at = now() WHERE product_id = ANY($2::bigint[])",
        b"\x01" * 32,
        [501, 502],
    )
