"""Loader benchmark: `python tests/benchmarks/bench_loader.py [--lines N] [--runs R]`.

Two workloads, each loaded by `python -m dahell load ... --json` as a subprocess into a fresh,
already migrated embedded database, timed as wall seconds including the process start-up:

- backfill: the shape of one installation's history (FORMAT.md): 340,629 legacy lines over 9
  daily files holding 24,227 products, each seen ~14 times, mostly unchanged, some with a new
  stock or price (goal: <= 15 s);
- N legacy lines (default 200,000), 70% first sightings, 30% repeats of earlier products, some
  with a changed stock or price; SIMPLE and VARIABLE products shaped like the real samples.

In the same run, as baselines for the second workload:

- seed-style: the previous system's algorithm (one transaction per line: a SELECT for existence,
  then the supplier, warehouse, product and stock statements) on a sample of the lines;
- plain COPY of the same product rows into an unindexed table (the ceiling).

Prints the backfill's wall seconds, lines/s for each method and the ratios (goals: backfill
<= 15 s, >= 25x seed-style). With `--runs R` each dahell load runs R times (each into a fresh
database), the seed-style sample once after each of the 200k-line loads, and the medians are
printed, with the load average before and after. The machine's load moves the seed-style
figure most (one round trip per statement): compare ratios from runs at a similar load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dahell import db  # noqa: E402
from tests.factories import catalog_lines  # noqa: E402

SEED_SAMPLE = 2_000
BACKFILL_LINES = 340_629
BACKFILL_PRODUCTS = 24_227
BACKFILL_FILES = 9


def generate(path: Path, n: int) -> None:
    path.write_text("\n".join(catalog_lines(n)) + "\n", encoding="utf-8")


def generate_backfill(folder: Path) -> list[Path]:
    """BACKFILL_LINES lines over about BACKFILL_PRODUCTS products, cut into daily files."""
    lines = catalog_lines(BACKFILL_LINES, repeat_share=1 - BACKFILL_PRODUCTS / BACKFILL_LINES)
    per_file = -(-len(lines) // BACKFILL_FILES)
    paths = []
    for day in range(BACKFILL_FILES):
        path = folder / f"raw_products_202512{day + 10:02d}.jsonl"
        part = lines[day * per_file : (day + 1) * per_file]
        path.write_text("\n".join(part) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def run_dahell_load(paths: list[Path], data_dir: Path) -> tuple[float, dict[str, object]]:
    """Time `dahell load` on a fresh, already initialised database (initdb is not loading)."""
    env = {**os.environ, "DAHELL_PATHS__DATA_DIR": str(data_dir), "DAHELL_DATABASE__DSN": ""}
    subprocess.run(
        [sys.executable, "-m", "dahell", "migrate"],
        env=env,
        capture_output=True,
        check=True,
        cwd=REPO,
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "dahell", "load", *map(str, paths), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return time.perf_counter() - started, json.loads(out.stdout)


async def seed_style(dsn: str, lines: list[str]) -> float:
    """One transaction per line, five statements, like the previous loader."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        """DROP TABLE IF EXISTS seed_suppliers, seed_warehouses, seed_products, seed_stock;
           CREATE TABLE seed_suppliers (id bigint PRIMARY KEY, name text);
           CREATE TABLE seed_warehouses (id bigint PRIMARY KEY);
           CREATE TABLE seed_products (id bigint PRIMARY KEY, supplier_id bigint, name text,
               sale_price numeric, suggested_price numeric, raw jsonb, updated_at timestamptz);
           CREATE TABLE seed_stock (id bigserial PRIMARY KEY, product_id bigint,
               warehouse_id bigint, stock bigint, at timestamptz)"""
    )
    started = time.perf_counter()
    for line in lines:
        rec = json.loads(line)
        raw = rec["raw_json"]
        async with conn.transaction():
            await conn.fetchval("SELECT 1 FROM seed_products WHERE id = $1", raw["id"])
            await conn.execute(
                "INSERT INTO seed_suppliers VALUES ($1, $2) ON CONFLICT (id) DO UPDATE"
                " SET name = excluded.name",
                raw["user"]["id"],
                raw["user"]["name"],
            )
            wid = rec.get("warehouse_id") or 0
            await conn.execute(
                "INSERT INTO seed_warehouses VALUES ($1) ON CONFLICT DO NOTHING", wid
            )
            await conn.execute(
                "INSERT INTO seed_products VALUES ($1, $2, $3, $4, $5, $6, now())"
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, raw = excluded.raw,"
                " sale_price = excluded.sale_price, updated_at = now()",
                raw["id"],
                raw["user"]["id"],
                raw["name"],
                raw.get("sale_price"),
                raw.get("suggested_price"),
                json.dumps(raw),
            )
            await conn.execute(
                "INSERT INTO seed_stock (product_id, warehouse_id, stock, at)"
                " VALUES ($1, $2, $3, now())",
                raw["id"],
                wid,
                rec.get("stock") or 0,
            )
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed


async def plain_copy(dsn: str, lines: list[str]) -> float:
    """COPY the product rows (parsed the same way) into an unindexed table."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE copy_products (id bigint, supplier_id bigint, name text,"
        " sale_price numeric, suggested_price numeric, raw jsonb)"
    )
    started = time.perf_counter()
    rows = []
    for line in lines:
        raw = json.loads(line)["raw_json"]
        rows.append(
            (
                raw["id"],
                raw["user"]["id"],
                raw["name"],
                raw.get("sale_price"),
                raw.get("suggested_price"),
                json.dumps(raw),
            )
        )
    await conn.copy_records_to_table("copy_products", records=rows)
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed


def median_load(
    paths: list[Path], root: Path, runs: int, after_each: Callable[[], None] = lambda: None
) -> tuple[float, dict[str, object]]:
    """The median wall seconds of `runs` loads, each into a fresh database; `after_each` runs
    after every load (the baseline, measured between them so that both see the same load)."""
    times, summary = [], {}
    for run in range(runs):
        elapsed, summary = run_dahell_load(paths, root / f"data-{paths[0].stem}-{run}")
        times.append(elapsed)
        after_each()
    return statistics.median(times), summary


def outcomes(summary: dict[str, object]) -> str:
    return " ".join(
        f"{k}={summary[k]:,}" for k in ("lines", "inserted", "updated", "unchanged", "rejected")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-backfill", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="dahell-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        if not args.skip_backfill:
            backfill_dir = root / "backfill"
            backfill_dir.mkdir()
            files = generate_backfill(backfill_dir)
            backfill_s, backfill = median_load(files, root, args.runs)
            print(f"backfill: {BACKFILL_FILES} files; outcomes: {outcomes(backfill)}")
            print(
                f"backfill wall seconds (incl. start-up): {backfill_s:.2f}"
                f" ({BACKFILL_LINES / backfill_s:,.0f} lines/s; goal <= 15 s)"
            )
            for path in files:
                path.unlink()
        source = root / "raw_products_20251223.jsonl"
        generate(source, args.lines)
        size_mb = source.stat().st_size / 1e6
        lines = source.read_text(encoding="utf-8").splitlines()
        server = db.start_embedded(root / "baseline")
        seed_times: list[float] = []
        try:
            elapsed, summary = median_load(
                [source],
                root,
                args.runs,
                lambda: seed_times.append(asyncio.run(seed_style(server.dsn, lines[:SEED_SAMPLE]))),
            )
            copy_s = asyncio.run(plain_copy(server.dsn, lines))
        finally:
            server.stop()
        seed_s = statistics.median(seed_times)
    dahell_rate = args.lines / elapsed
    seed_rate = SEED_SAMPLE / seed_s
    copy_rate = args.lines / copy_s
    print(f"input: {args.lines:,} lines, {size_mb:.1f} MB; outcomes: {outcomes(summary)}")
    print(f"{'method':<34}{'lines/s':>12}{'seconds':>10}")
    print(f"{'dahell load (wall, incl. start-up)':<34}{dahell_rate:>12,.0f}{elapsed:>10.2f}")
    print(f"{'seed-style (sample ' + str(SEED_SAMPLE) + ')':<34}{seed_rate:>12,.0f}{seed_s:>10.2f}")
    print(f"{'plain COPY, unindexed':<34}{copy_rate:>12,.0f}{copy_s:>10.2f}")
    print(f"dahell / seed-style: {dahell_rate / seed_rate:.1f}x (goal >= 25x)")
    print(f"dahell / plain COPY: {dahell_rate / copy_rate:.0%}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
