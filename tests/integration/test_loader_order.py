"""Capture order, not batch or file boundaries, decides what the catalog tables hold.

The same lines loaded one per batch, in small batches, in one batch, or split over several
files must leave every table row for row the same (the loader's promise: a batch applies as if
its lines arrived one at a time in line order).
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from dahell.config import Config
from dahell.stages import loader as loader_mod
from dahell.stages.loader import FileReport, Loader
from tests.factories import catalog_lines, legacy_line, simple_product, variable_product

OLD = 1_700_000_000
#: Columns that hold the load's own clock or a sequence number, not data (as do columns
#: whose default is now()).
VOLATILE = {
    "id",
    "created_at",
    "updated_at",
    "rejected_at",
    "next_attempt_at",
    "processed_at",
    "priority_at",
}
TABLES = (
    "products",
    "suppliers",
    "warehouses",
    "categories",
    "product_categories",
    "product_variations",
    "product_stock",
    "product_stock_log",
    "variation_stock_log",
    "price_history",
    "embedding_jobs",
    "rejects",
    "load_checkpoints",
    "load_totals",
)


def write(path: Path, lines: list[str]) -> Path:
    path.write_bytes(b"".join(line.encode() + b"\n" for line in lines))
    os.utime(path, (OLD, OLD))
    return path


async def load(pool: asyncpg.Pool, config: Config, path: Path) -> FileReport:
    loader = Loader(pool, lambda: config, structlog.get_logger())
    try:
        return await loader.load_path(path)
    finally:
        await loader.close()


async def snapshot(pool: asyncpg.Pool, tables: tuple[str, ...] = TABLES) -> dict[str, Any]:
    """Every row of every table, without the volatile columns, in a stable order."""
    out: dict[str, Any] = {}
    for table in tables:
        columns = [
            r["column_name"]
            for r in await pool.fetch(
                "SELECT column_name, coalesce(column_default, '') AS dflt"
                " FROM information_schema.columns"
                " WHERE table_name = $1 AND table_schema = 'public' ORDER BY ordinal_position",
                table,
            )
            if r["column_name"] not in VOLATILE and "now()" not in r["dflt"]
        ]
        select = ", ".join(f"{c}::text" for c in columns)
        rows = await pool.fetch(f"SELECT {select} FROM {table}")
        out[table] = sorted(tuple(r) for r in rows)
    return out


async def truncate(pool: asyncpg.Pool) -> None:
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


def at(hour: int, minute: int = 0) -> str:
    return f"2025-12-23T{hour:02d}:{minute:02d}:00"


def product(pid: int, **kw: Any) -> dict[str, Any]:
    return simple_product(pid, **kw)


def supplier(sid: int, name: str, plan: str) -> dict[str, Any]:
    return {"id": sid, "name": name, "plan": {"id": 4, "name": plan}, "store_name": f"T{sid}"}


def warehouse_product(pid: int, wid: int, name: str | None, city: str | None, stock: int) -> Any:
    warehouse: dict[str, Any] = {"id": wid}
    if name is not None:
        warehouse["name"] = name
    if city is not None:
        warehouse["city"] = {"id": 1, "name": city}
    return [{"id": pid * 10, "stock": stock, "warehouse_id": wid, "warehouse": warehouse}]


def tricky_lines() -> list[str]:
    """Changes and changes back, older lines after newer ones, shared suppliers and warehouses
    seen by several products at several times, variations and categories that come and go."""
    lines: list[str] = []
    # A, B, A again, then an older C: A (captured last) must stay
    lines += [
        legacy_line(product(1, price=10_000), at(1)),
        legacy_line(product(1, price=20_000), at(2)),
        legacy_line(product(1, price=10_000), at(3)),
        legacy_line(product(1, price=30_000), at(2, 30)),
    ]
    # a supplier seen by three products, its newest name captured in the middle of the file
    for pid, hour, name in ((2, 5, "Nuevo"), (3, 4, "Viejo"), (4, 3, "Antiguo")):
        lines.append(legacy_line(product(pid, user=supplier(77, name, f"PLAN {name}")), at(hour)))
    # a warehouse's name and city, newest capture first, then older ones, one without a city
    sightings: tuple[tuple[int, int, str | None, str | None], ...] = (
        (5, 9, "Bodega nueva", "Cali"),
        (6, 8, "Bodega vieja", "Bogotá"),
        (7, 10, None, None),
        (8, 7, "Bodega antigua", "Pasto"),
    )
    for pid, hour, wh_name, city in sightings:
        wp = warehouse_product(pid, 3333, wh_name, city, pid)
        lines.append(legacy_line(product(pid, warehouse_product=wp), at(hour)))
    # variations that disappear and come back, categories that change
    variable = variable_product(9, variations=3)
    fewer = variable_product(9, variations=1)
    lines += [
        json.dumps(variable | {"capture_timestamp": at(1)}),
        json.dumps(fewer | {"capture_timestamp": at(2), "categories": [{"name": "Juguetes"}]}),
        json.dumps(variable | {"capture_timestamp": at(3)}),
        json.dumps(fewer | {"capture_timestamp": at(2, 30)}),
    ]
    # stock that moves and moves back, interleaved with repeats
    for hour, stock in ((11, 5), (12, 6), (13, 5), (13, 5), (12, 7), (14, 6)):
        lines.append(legacy_line(product(10, stock=stock), at(hour)))
    # an image that changes and changes back
    moved = [{"urlS3": "colombia/products/11/otra.jpg", "main": True}]
    lines += [
        legacy_line(product(11), at(1)),
        legacy_line(product(11, gallery=moved), at(2)),
        legacy_line(product(11), at(3)),
    ]
    lines += ["{not json", json.dumps({"isSuccess": True, "objects": [product(12), "x"]})]
    return lines


async def test_a_value_that_changes_back_keeps_its_newest_capture(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    config = make_config(pg_dsn)
    await load(pool, config, write(tmp_path / "a.jsonl", [legacy_line(product(1), at(1))]))
    batch = [
        legacy_line(product(1, price=60_000), at(2)),
        legacy_line(product(1), at(3)),
    ]
    report = await load(pool, config, write(tmp_path / "b.jsonl", batch))
    assert report.stats.updated == 2
    row = await pool.fetchrow("SELECT captured_at, last_seen_at FROM products")
    assert (row["captured_at"].hour, row["last_seen_at"].hour) == (3, 3)
    older = [legacy_line(product(1, price=70_000), at(2, 30))]
    await load(pool, config, write(tmp_path / "c.jsonl", older))
    assert await pool.fetchval("SELECT sale_price FROM products") == 50_000


async def test_every_table_is_the_same_whatever_the_batch_size(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = write(tmp_path / "raw_products_20251223.jsonl", tricky_lines())
    snapshots = {}
    for size in (1, 2, 3, 7, 1000):
        await truncate(pool)
        await load(pool, make_config(pg_dsn, LOADER__BATCH_SIZE=str(size)), path)
        snapshots[size] = await snapshot(pool)
    for size, tables in snapshots.items():
        for table in TABLES:
            assert tables[table] == snapshots[1][table], (size, table)


async def test_file_boundaries_do_not_change_the_catalog(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    lines = tricky_lines()
    catalog = TABLES[:-3]  # rejects and checkpoints name their file
    config = make_config(pg_dsn, LOADER__BATCH_SIZE="1000")
    await load(pool, config, write(tmp_path / "whole.jsonl", lines))
    whole = await snapshot(pool, catalog)
    for cuts in ((5,), (3, 9, 17), tuple(range(1, len(lines)))):
        await truncate(pool)
        bounds = [0, *cuts, len(lines)]
        for n, (a, b) in enumerate(itertools.pairwise(bounds)):
            await load(pool, config, write(tmp_path / f"part{n}.jsonl", lines[a:b]))
        assert await snapshot(pool, catalog) == whole, cuts


async def test_shared_rows_keep_their_newest_capture(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    config = make_config(pg_dsn)
    newer = legacy_line(product(1, user=supplier(77, "Nuevo", "PLAN NUEVO")), at(5))
    await load(pool, config, write(tmp_path / "a.jsonl", [newer]))
    wp = warehouse_product(2, 3333, "Bodega nueva", "Cali", 1)
    newer_warehouse = legacy_line(product(2, warehouse_product=wp), at(5))
    await load(pool, config, write(tmp_path / "b.jsonl", [newer_warehouse]))
    # older lines for products not loaded yet: they must not rewrite the shared rows
    older_supplier = legacy_line(product(3, user=supplier(77, "Viejo", "PLAN VIEJO")), at(4))
    old_wp = warehouse_product(4, 3333, "Bodega vieja", "Pasto", 1)
    older_warehouse = legacy_line(product(4, warehouse_product=old_wp), at(4))
    await load(pool, config, write(tmp_path / "c.jsonl", [older_supplier, older_warehouse]))
    row = await pool.fetchrow("SELECT name, plan_name FROM suppliers WHERE supplier_id = 77")
    assert (row["name"], row["plan_name"]) == ("Nuevo", "PLAN NUEVO")
    row = await pool.fetchrow("SELECT name, city FROM warehouses WHERE warehouse_id = 3333")
    assert (row["name"], row["city"]) == ("Bodega nueva", "Cali")
    # inside one batch the newest capture wins, not the last line
    batch = [
        legacy_line(product(5, user=supplier(78, "Último", "PLAN B")), at(9)),
        legacy_line(product(6, user=supplier(78, "Primero", "PLAN A")), at(8)),
    ]
    await load(pool, config, write(tmp_path / "d.jsonl", batch))
    row = await pool.fetchrow("SELECT name, plan_name FROM suppliers WHERE supplier_id = 78")
    assert (row["name"], row["plan_name"]) == ("Último", "PLAN B")


async def test_shuffled_captures_give_the_same_tables_at_every_batch_size(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: Any
) -> None:
    lines = catalog_lines(240, repeat_share=0.6, seed=7)
    random.Random(3).shuffle(lines)  # captures out of order, repeats on both sides of a change
    path = write(tmp_path / "raw_products_20251223.jsonl", lines)
    monkeypatch.setattr(loader_mod, "PARALLEL_PARSE_MIN_BYTES", 0)
    snapshots = {}
    for size, processes in ((1, 0), (13, 0), (1000, 0), (17, 2)):
        await truncate(pool)
        config = make_config(
            pg_dsn, LOADER__BATCH_SIZE=str(size), LOADER__PARSE_PROCESSES=str(processes)
        )
        await load(pool, config, path)
        snapshots[size] = await snapshot(pool)
    for size, tables in snapshots.items():
        for table in TABLES:
            assert tables[table] == snapshots[1][table], (size, table)


async def test_inside_a_batch_a_warehouse_takes_its_newest_sighting(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    sightings = [
        (1, 9, "Bodega nueva", "Cali"),
        (2, 8, "Bodega vieja", "Bogotá"),
        (3, 10, None, None),  # the newest says nothing of its name: the name stays
        (4, 7, "Bodega antigua", "Pasto"),
    ]
    lines = [
        legacy_line(product(pid, warehouse_product=warehouse_product(pid, 3333, n, c, 1)), at(h))
        for pid, h, n, c in sightings
    ]
    await load(pool, make_config(pg_dsn), write(tmp_path / "a.jsonl", lines))
    row = await pool.fetchrow("SELECT * FROM warehouses WHERE warehouse_id = 3333")
    assert (row["name"], row["city"]) == ("Bodega nueva", "Cali")
    assert (row["first_seen_at"].hour, row["last_seen_at"].hour) == (7, 10)


async def test_a_repeat_with_the_same_categories_leaves_its_links_alone(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    links = "SELECT category_id, xmin::text FROM product_categories WHERE product_id = 1 ORDER BY 1"
    config = make_config(pg_dsn, LOADER__BATCH_SIZE="1")
    await load(pool, config, write(tmp_path / "a.jsonl", [legacy_line(product(1), at(1))]))
    before = [tuple(r) for r in await pool.fetch(links)]
    lines = [
        legacy_line(product(1, stock=3), at(2)),  # new stock, same categories
        legacy_line(product(1, stock=4), at(3)),
    ]
    report = await load(pool, config, write(tmp_path / "b.jsonl", lines))
    assert report.stats.updated == 2
    assert [tuple(r) for r in await pool.fetch(links)] == before
    toys = legacy_line(product(1, categories=[{"name": "Juguetes"}]), at(4))
    await load(pool, config, write(tmp_path / "c.jsonl", [toys]))
    names = await pool.fetch(
        "SELECT c.name FROM product_categories pc JOIN categories c ON c.id = pc.category_id"
        " WHERE pc.product_id = 1"
    )
    assert [r["name"] for r in names] == ["Juguetes"]
