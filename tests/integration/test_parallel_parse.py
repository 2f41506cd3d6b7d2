"""Parsing in worker processes gives exactly what parsing in the loader's thread gives."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from dahell.stages import loader as loader_mod
from dahell.stages.loader import FileReport, Loader
from tests.factories import catalog_lines, legacy_line, simple_product, variable_product

OLD = 1_700_000_000
LOADED_TABLES = (
    "products",
    "suppliers",
    "warehouses",
    "categories",
    "product_stock",
    "product_stock_log",
    "variation_stock_log",
    "price_history",
    "product_variations",
    "product_categories",
    "rejects",
    "embedding_jobs",
    "load_checkpoints",
    "load_totals",
)

SNAPSHOT = {
    "products": "SELECT product_id, supplier_id, sku, title, description, sale_price,"
    " suggested_price, product_type, url_image_s3, last_seen_at, raw_data, captured_at"
    " FROM products ORDER BY product_id",
    "stock": "SELECT * FROM product_stock ORDER BY 1, 2, 3",
    "stock_log": "SELECT product_id, warehouse_id, stock_qty, snapshot_at FROM product_stock_log"
    " ORDER BY 1, 2, 4, 3",
    "variation_log": "SELECT product_id, variation_id, warehouse_id, stock_qty, snapshot_at"
    " FROM variation_stock_log ORDER BY 1, 2, 3, 5, 4",
    "prices": "SELECT product_id, variation_id, sale_price, suggested_price, captured_at"
    " FROM price_history ORDER BY 1, 2, 5, 3, 4",
    "rejects": "SELECT line_no, byte_offset, reason, detail FROM rejects ORDER BY line_no, id",
    "jobs": "SELECT product_id, image_url, state FROM embedding_jobs ORDER BY 1",
}


def mixed_file(path: Path) -> Path:
    """Repeats (same and changed), every kind of bad line, a response line, a cut-off tail."""
    lines: list[bytes] = [line.encode() for line in catalog_lines(400, repeat_share=0.5)]
    bad = [
        b"{not json",
        b"42",
        json.dumps({"name": "no id"}).encode(),
        b"",
        json.dumps(simple_product(90_001, name="nul\u0000byte")).encode(),
        json.dumps(simple_product(90_002, name="Cami\xf3n")).encode("latin-1"),
        json.dumps(
            {"isSuccess": True, "objects": [simple_product(90_003), variable_product(90_004)]}
        ).encode(),
        json.dumps({"isSuccess": False, "message": "Token is Expired"}).encode(),
        json.dumps(simple_product(90_005, description="x" * 5000)).encode(),  # over the cap
        legacy_line(
            simple_product(90_006, price=10**12, suggested_price=None), "2025-12-23T01:00:00"
        ).encode(),
    ]
    for i, line in enumerate(bad):
        lines.insert(37 * (i + 1), line)
    # the same product, unchanged, then older, then changed: Seen must keep each capture time
    again = simple_product(90_007)
    lines += [
        legacy_line(again, "2025-12-23T05:00:00").encode(),
        legacy_line(again, "2025-12-23T06:00:00").encode(),
        legacy_line(again, "2025-12-23T04:00:00").encode(),
        legacy_line(simple_product(90_007, stock=3), "2025-12-23T07:00:00").encode(),
        legacy_line(again, "2025-12-23T08:00:00").encode(),
    ]
    # an older capture is skipped by the database but remembered by the worker: the newer
    # repeat of it arrives as a Seen the database does not hold, and must be expanded
    lines += [
        legacy_line(simple_product(90_008, stock=1), "2025-12-23T20:00:00").encode(),
        legacy_line(simple_product(90_008, stock=2), "2025-12-23T10:00:00").encode(),
        legacy_line(simple_product(90_008, stock=2), "2025-12-23T21:00:00").encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b'\n{"id": 7, "na')
    os.utime(path, (OLD, OLD))
    return path


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in await pool.fetch(sql)] for name, sql in SNAPSHOT.items()}


async def load_with(pool: asyncpg.Pool, config: Any, path: Path) -> FileReport:
    loader = Loader(pool, lambda: config, structlog.get_logger())
    try:
        return await loader.load_path(path)
    finally:
        await loader.close()


async def test_worker_processes_load_exactly_what_the_thread_loads(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: Any
) -> None:
    path = mixed_file(tmp_path / "raw_products_20251223.jsonl")
    limits = {"LOADER__MAX_LINE_BYTES": "4096", "LOADER__BATCH_SIZE": "97"}
    in_thread = await load_with(
        pool, make_config(pg_dsn, LOADER__PARSE_PROCESSES="0", **limits), path
    )
    expected = await snapshot(pool)
    await pool.execute(
        "TRUNCATE products, suppliers, warehouses, product_stock, product_stock_log,"
        " variation_stock_log, price_history, product_variations, product_categories, rejects,"
        " embedding_jobs, load_checkpoints, load_totals CASCADE"
    )
    monkeypatch.setattr(loader_mod, "PARALLEL_PARSE_MIN_BYTES", 0)
    workers = await load_with(
        pool, make_config(pg_dsn, LOADER__PARSE_PROCESSES="2", **limits), path
    )
    assert workers.stats.as_dict() == in_thread.stats.as_dict()
    assert workers.stats.loaded + workers.stats.rejected == workers.stats.lines
    assert workers.end_offset == in_thread.end_offset
    assert await snapshot(pool) == expected
    reasons = set(in_thread.stats.rejected_by_reason)
    assert {"invalid_json", "not_an_object", "missing_id", "blank_line", "line_too_long"} <= reasons
    assert {"api_error", "truncated_line", "db_error:22003"} <= reasons
    seen = await pool.fetchval("SELECT last_seen_at FROM products WHERE product_id = 90007")
    assert seen.hour == 8
    stock = await pool.fetchval("SELECT stock_qty FROM product_stock WHERE product_id = 90008")
    assert stock == 2


async def test_a_seen_the_database_does_not_hold_is_expanded(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(loader_mod, "PARALLEL_PARSE_MIN_BYTES", 0)
    expanded: list[int] = []
    make_expander = Loader._expander

    def counting(self: Loader, item: Any) -> Any:
        expand = make_expander(self, item)
        if expand is None:
            return None

        def wrapped() -> Any:
            expanded.append(item.line.line_no)
            return expand()

        return wrapped

    monkeypatch.setattr(Loader, "_expander", counting)
    lines = [
        legacy_line(simple_product(5, stock=1), "2025-12-23T20:00:00"),
        legacy_line(simple_product(5, stock=2), "2025-12-23T10:00:00"),  # older: skipped
        legacy_line(simple_product(5, stock=2), "2025-12-23T21:00:00"),  # Seen, then expanded
        legacy_line(simple_product(5, stock=2), "2025-12-23T22:00:00"),  # Seen, unchanged
    ]
    path = tmp_path / "seen.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = await load_with(pool, make_config(pg_dsn, LOADER__PARSE_PROCESSES="1"), path)
    counts = report.stats.as_dict()
    assert (counts["inserted"], counts["updated"], counts["unchanged"]) == (1, 1, 2)
    assert expanded == [3]
    row = await pool.fetchrow(
        "SELECT stock_qty, snapshot_at FROM product_stock WHERE product_id = 5"
    )
    assert row["stock_qty"] == 2 and row["snapshot_at"].hour == 21
    seen = await pool.fetchval("SELECT last_seen_at FROM products WHERE product_id = 5")
    assert seen.hour == 22


async def test_a_dead_worker_costs_speed_not_lines(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(loader_mod, "PARALLEL_PARSE_MIN_BYTES", 0)
    config = make_config(pg_dsn, LOADER__PARSE_PROCESSES="1")
    loader = Loader(pool, lambda: config, structlog.get_logger())
    first = tmp_path / "first.jsonl"
    first.write_text("\n".join(catalog_lines(50, seed=2)) + "\n")
    try:
        assert (await loader.load_path(first)).stats.rejected == 0
        parse_pool = loader._parse_pool
        assert parse_pool is not None
        for pid in list(parse_pool._executor._processes):  # what an OOM killer would do
            os.kill(pid, signal.SIGKILL)
        second = mixed_file(tmp_path / "second.jsonl")
        report = await loader.load_path(second)
        third = tmp_path / "third.jsonl"
        third.write_text("\n".join(catalog_lines(50, seed=3)) + "\n")
        assert (await loader.load_path(third)).stats.rejected == 0
        assert loader._parse_pool is not parse_pool  # a fresh pool for the next file
    finally:
        await loader.close()
    total = len(second.read_bytes().split(b"\n"))
    stats = report.stats
    assert stats.lines == total  # the response line is one line holding two products
    assert stats.products == total + 1
    assert stats.loaded + stats.rejected == stats.lines
    assert stats.inserted + stats.updated + stats.unchanged + stats.products_rejected == (
        stats.products
    )


@pytest.mark.parametrize("processes", ["0", "3"])
async def test_parse_processes_is_validated(make_config: Any, processes: str) -> None:
    assert make_config(LOADER__PARSE_PROCESSES=processes).loader.parse_processes == int(processes)


async def test_batches_lost_after_their_commit_are_loaded_again_by_the_same_workers(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: Any
) -> None:
    """Asynchronous commit: a PANIC can lose batches the loader saw committed, rows and
    checkpoint together. The workers that parsed them still remember their hashes and answer
    the replayed lines with `Seen`: each must reach the database again, in full."""
    monkeypatch.setattr(loader_mod, "PARALLEL_PARSE_MIN_BYTES", 0)
    lines = [line.encode() + b"\n" for line in catalog_lines(300, repeat_share=0.4, seed=11)]
    path = tmp_path / "raw_products_20251223.jsonl"
    path.write_bytes(b"".join(lines))
    config = make_config(pg_dsn, LOADER__PARSE_PROCESSES="1", LOADER__BATCH_SIZE="37")
    await load_with(pool, config, path)
    clean = await snapshot(pool)
    loader = Loader(pool, lambda: config, structlog.get_logger())
    try:
        for cut in (0, 150, 0, 299):
            # the database as the loss leaves it: only the first `cut` lines committed
            await pool.execute(f"TRUNCATE {', '.join(LOADED_TABLES)} CASCADE")
            path.write_bytes(b"".join(lines[:cut]))
            await load_with(pool, config, path)
            path.write_bytes(b"".join(lines))
            report = await loader.load_path(path)  # workers that have seen every line
            assert report.stats.lines == len(lines) - cut
            assert await snapshot(pool) == clean, cut
    finally:
        await loader.close()
