"""The loader against a real PostgreSQL: every line loaded or rejected with a reason, once."""

from __future__ import annotations

import errno
import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from dahell import dropi, journal, load_command, status_command
from dahell.config import Config
from dahell.stages import loader as loader_mod
from dahell.stages.loader import FileReport, Loader
from tests.factories import legacy_line, simple_product, variable_product

OLD = 1_700_000_000  # a file modification time far in the past (no "still being written")


def write(path: Path, lines: Sequence[str | bytes], *, newline_at_end: bool = True) -> Path:
    data = b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines)
    path.write_bytes(data + (b"\n" if newline_at_end else b""))
    os.utime(path, (OLD, OLD))
    return path


async def load(pool: asyncpg.Pool, config: Config, path: Path) -> FileReport:
    loader = Loader(pool, lambda: config, structlog.get_logger())
    return await loader.load_path(path)


async def rejects(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch("SELECT * FROM rejects ORDER BY line_no, id")
    return rows


@pytest.fixture
def config(make_config: Any, pg_dsn: str) -> Config:
    return make_config(pg_dsn)  # type: ignore[no-any-return]


async def test_every_reject_reason_is_recorded_with_its_line(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    huge = json.dumps(simple_product(9, description="x" * (config.loader.max_line_bytes + 10)))
    lines: list[str | bytes] = [
        legacy_line(simple_product(1), "2025-12-23T01:00:00"),
        "{not json",
        "42",
        '"just a string"',
        json.dumps({"name": "no id"}),
        json.dumps({"id": "abc"}),
        json.dumps(simple_product(2, sale_price=float("nan")) | {"sale_price": "NaN"}),
        json.dumps(
            simple_product(3, warehouse_product=[{"id": 1, "stock": -4, "warehouse_id": 7}])
        ),
        json.dumps(
            simple_product(4, warehouse_product=[{"id": 1, "stock": 2.5, "warehouse_id": 7}])
        ),
        "",
        huge,
        json.dumps({"isSuccess": False, "message": "Token is Expired"}),
        json.dumps({"isSuccess": True, "objects": []}),
    ]
    report = await load(pool, config, write(tmp_path / "raw_products_20251223.jsonl", lines))
    stats = report.stats
    assert stats.lines == len(lines)
    assert stats.loaded + stats.rejected == stats.lines
    assert stats.inserted == 1
    by_line = {r["line_no"]: r["reason"] for r in await rejects(pool)}
    assert by_line[2] == "invalid_json"
    assert by_line[3] == "not_an_object"
    assert by_line[4] == "not_an_object"
    assert by_line[5] == "missing_id"
    assert by_line[6] == "invalid_id"
    assert by_line[7] == "invalid_field:sale_price"
    assert by_line[8].startswith("invalid_field:") and "stock" in by_line[8]
    assert by_line[9].startswith("invalid_field:") and "stock" in by_line[9]
    assert by_line[10] == "blank_line"
    assert by_line[11] == "line_too_long"
    assert by_line[12] == "api_error"
    assert by_line[13] == "empty_response"
    assert dict(stats.rejected_by_reason) == {
        reason: list(by_line.values()).count(reason) for reason in set(by_line.values())
    }
    row = (await rejects(pool))[0]
    assert row["source"].endswith("raw_products_20251223.jsonl")
    assert row["byte_offset"] > 0 and row["raw_text"] == "{not json" and row["rejected_at"]


async def test_bad_rows_do_not_reject_their_batch(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    """A NUL byte is cleaned, a duplicate id merged, a value PostgreSQL refuses isolated."""
    lines = [legacy_line(simple_product(i), "2025-12-23T01:00:00") for i in range(1, 41)]
    lines[5] = legacy_line(simple_product(6, name="nul\u0000byte"), "2025-12-23T01:00:00")
    lines[10] = legacy_line(simple_product(10, stock=99), "2025-12-23T02:00:00")  # id 10 twice
    poisoned = simple_product(21, price=10**12, suggested_price=None)  # numeric(14,2) overflow
    lines[20] = legacy_line(poisoned, "2025-12-23T01:00:00")
    report = await load(pool, config, write(tmp_path / "poison.jsonl", lines))
    assert report.stats.rejected == 1
    assert dict(report.stats.rejected_by_reason) == {"db_error:22003": 1}
    assert await pool.fetchval("SELECT count(*) FROM products") == 38
    assert await pool.fetchval("SELECT title FROM products WHERE product_id = 6") == "nulbyte"
    assert await pool.fetchval("SELECT stock_qty FROM product_stock WHERE product_id = 10") == 99
    reject = (await rejects(pool))[0]
    assert reject["line_no"] == 21 and reject["reason"] == "db_error:22003"


async def test_a_split_batch_writes_each_part_once(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    """Isolating a refused row applies the batch in parts within one transaction: a later part
    must not write an earlier part's staged rows again (over the newer values)."""
    lines = [legacy_line(simple_product(i), "2025-12-23T01:00:00") for i in range(1, 41)]
    lines[29] = legacy_line(simple_product(2, price=61_000), "2025-12-23T03:00:00")
    poisoned = simple_product(35, price=10**12, suggested_price=None)  # numeric(14,2) overflow
    lines[34] = legacy_line(poisoned, "2025-12-23T01:00:00")
    report = await load(pool, config, write(tmp_path / "split.jsonl", lines))
    assert dict(report.stats.rejected_by_reason) == {"db_error:22003": 1}
    assert await pool.fetchval("SELECT sale_price FROM products WHERE product_id = 2") == 61_000
    prices = await pool.fetch(
        "SELECT sale_price FROM price_history WHERE product_id = 2 ORDER BY captured_at"
    )
    assert [r["sale_price"] for r in prices] == [50_000, 61_000]
    assert await pool.fetchval("SELECT count(*) FROM price_history") == 39


async def test_latin1_and_mixed_encodings_are_decoded(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    latin1 = legacy_line(simple_product(1, name="Camión rápido"), "2025-12-23T01:00:00")
    mixed = legacy_line(simple_product(2, name="Camión ★"), "2025-12-23T01:00:00").encode()
    mixed = mixed.replace("Camión".encode(), "Camión".encode("cp1252"))
    path = write(tmp_path / "latin.jsonl", [latin1.encode("latin-1"), mixed])
    report = await load(pool, config, path)
    assert report.stats.inserted == 2
    titles = dict(await pool.fetch("SELECT product_id, title FROM products"))
    assert titles == {1: "Camión rápido", 2: "Camión ★"}


async def test_truncated_last_line_is_rejected_in_an_old_file(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    full = legacy_line(simple_product(1), "2025-12-23T01:00:00")
    cut = legacy_line(simple_product(2), "2025-12-23T01:00:00")[:80]
    path = write(tmp_path / "cut.jsonl", [full, cut], newline_at_end=False)
    report = await load(pool, config, path)
    assert (report.stats.inserted, report.stats.rejected) == (1, 1)
    assert dict(report.stats.rejected_by_reason) == {"truncated_line": 1}


async def test_truncated_last_line_of_a_file_being_written_waits(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    full = legacy_line(simple_product(1), "2025-12-23T01:00:00")
    second = legacy_line(simple_product(2), "2025-12-23T01:00:00")
    path = tmp_path / "live.jsonl"
    path.write_text(full + "\n" + second[:50])  # fresh mtime: still being written
    first = await load(pool, config, path)
    assert (first.stats.lines, first.pending_tail_bytes) == (1, len(second[:50].encode()))
    assert "later" in first.message
    with path.open("a") as fh:
        fh.write(second[50:] + "\n")
    again = await load(pool, config, path)
    assert (again.stats.inserted, again.stats.rejected) == (1, 0)


async def test_second_run_loads_nothing_and_a_grown_file_only_its_new_lines(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "grow.jsonl",
        [legacy_line(simple_product(i), "2025-12-23T01:00:00") for i in range(1, 6)],
    )
    first = await load(pool, config, path)
    assert first.stats.inserted == 5
    second = await load(pool, config, path)
    assert (second.status, second.stats.lines) == ("up_to_date", 0)
    with path.open("a") as fh:
        fh.write(legacy_line(simple_product(6), "2025-12-23T02:00:00") + "\n")
        fh.write(legacy_line(simple_product(1, stock=3), "2025-12-23T02:00:00") + "\n")
    third = await load(pool, config, path)
    assert (third.stats.lines, third.stats.inserted, third.stats.updated) == (2, 1, 1)
    assert await pool.fetchval("SELECT count(*) FROM product_stock_log") == 7
    assert await pool.fetchval("SELECT sum(lines) FROM load_totals") == 7


async def test_an_older_file_loaded_after_a_newer_one_changes_nothing(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    newer = write(
        tmp_path / "raw_products_20251224.jsonl",
        [legacy_line(simple_product(1, stock=5, price=60_000), "2025-12-24T01:00:00")],
    )
    older = write(
        tmp_path / "raw_products_20251223.jsonl",
        [legacy_line(simple_product(1, stock=9, price=50_000), "2025-12-23T01:00:00")],
    )
    await load(pool, config, newer)
    report = await load(pool, config, older)
    assert (report.stats.unchanged, report.stats.updated) == (1, 0)
    row = await pool.fetchrow("SELECT sale_price, last_seen_at FROM products")
    assert row["sale_price"] == 60_000 and row["last_seen_at"].day == 24
    assert await pool.fetchval("SELECT stock_qty FROM product_stock") == 5
    assert await pool.fetchval("SELECT count(*) FROM product_stock_log") == 1


async def test_history_rows_only_when_a_value_changes(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    lines = [
        legacy_line(simple_product(1, stock=5), "2025-12-23T01:00:00"),
        legacy_line(simple_product(1, stock=5), "2025-12-23T02:00:00"),
        legacy_line(simple_product(1, stock=4), "2025-12-23T03:00:00"),
        legacy_line(simple_product(1, stock=4, price=55_000), "2025-12-23T04:00:00"),
    ]
    report = await load(pool, config, write(tmp_path / "h.jsonl", lines))
    assert (report.stats.inserted, report.stats.unchanged, report.stats.updated) == (1, 1, 2)
    log = await pool.fetch("SELECT stock_qty, snapshot_at FROM product_stock_log ORDER BY id")
    assert [r["stock_qty"] for r in log] == [5, 4]
    assert log[1]["snapshot_at"].hour == 3  # the capture time, not the load time
    prices = await pool.fetch("SELECT sale_price FROM price_history ORDER BY id")
    assert [r["sale_price"] for r in prices] == [50_000, 55_000]
    seen = await pool.fetchval("SELECT last_seen_at FROM products")
    assert seen.hour == 4


async def test_batch_boundaries_do_not_change_the_result(
    make_config: Any, pg_dsn: str, pg_server: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    lines = [
        legacy_line(simple_product(i % 7 + 1, stock=i % 3), f"2025-12-23T{i % 24:02d}:00:00")
        for i in range(60)
    ]
    path = write(tmp_path / "b.jsonl", lines)
    await load(pool, make_config(pg_dsn, LOADER__BATCH_SIZE="7"), path)
    small = await pool.fetchval("SELECT count(*) FROM product_stock_log")
    await pool.execute(
        "TRUNCATE products, product_stock, product_stock_log, load_checkpoints CASCADE"
    )
    await load(pool, make_config(pg_dsn, LOADER__BATCH_SIZE="1000"), path)
    assert await pool.fetchval("SELECT count(*) FROM product_stock_log") == small


async def test_variable_product_stock_per_variation_and_warehouse(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    product = variable_product(7, variations=3, warehouses=(2444, 2555), stock=5)
    await load(pool, config, write(tmp_path / "v.jsonl", [json.dumps(product)]))
    rows = await pool.fetch(
        "SELECT variation_id, warehouse_id, stock_qty FROM product_stock"
        " WHERE variation_id <> 0 ORDER BY 1, 2"
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (700, 2444, 5),
        (700, 2555, 6),
        (701, 2444, 6),
        (701, 2555, 7),
        (702, 2444, 7),
        (702, 2555, 8),
    ]
    totals = dict(
        await pool.fetch("SELECT warehouse_id, stock_qty FROM product_stock WHERE variation_id = 0")
    )
    assert totals == {2444: 18, 2555: 21}
    assert await pool.fetchval("SELECT count(*) FROM product_variations") == 3
    cities = dict(await pool.fetch("SELECT warehouse_id, city FROM warehouses"))
    assert cities == {2444: "Bogotá", 2555: "Medellín"}
    assert await pool.fetchval("SELECT count(*) FROM variation_stock_log") == 6


async def test_gzip_files_and_whole_api_responses_load(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, pg_dsn: str
) -> None:
    response = {"isSuccess": True, "objects": [simple_product(1), variable_product(2)]}
    doc = tmp_path / "response.json"
    doc.write_text(json.dumps(response, indent=2))
    report = await load(pool, config, doc)
    physical = len(doc.read_bytes().splitlines())  # the document's lines, loaded together
    assert (report.stats.lines, report.stats.loaded) == (physical, physical)
    assert (report.stats.products, report.stats.inserted) == (2, 2)
    gz = tmp_path / "raw_products_20251225.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(legacy_line(simple_product(3), "2025-12-25T01:00:00") + "\n")
    assert (await load(pool, config, gz)).stats.inserted == 1
    assert (await load(pool, config, gz)).status == "up_to_date"


async def test_image_url_change_sets_embedding_work_pending(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    first = simple_product(1)
    await load(pool, config, write(tmp_path / "a.jsonl", [json.dumps(first)]))
    job = await pool.fetchrow("SELECT state, image_url FROM embedding_jobs")
    assert job["state"] == "pending"
    assert job["image_url"] == (
        "https://d39ru7awumhhs2.cloudfront.net/colombia/products/1/foto%201.jpg"
    )
    await pool.execute("UPDATE embedding_jobs SET state = 'done'")
    same = simple_product(1, stock=3)
    await load(pool, config, write(tmp_path / "b.jsonl", [json.dumps(same)]))
    assert await pool.fetchval("SELECT state FROM embedding_jobs") == "done"
    moved = simple_product(1, gallery=[{"urlS3": "colombia/products/1/new.jpg", "main": True}])
    await load(pool, config, write(tmp_path / "c.jsonl", [json.dumps(moved)]))
    assert await pool.fetchval("SELECT state FROM embedding_jobs") == "pending"


async def test_schema_contract_columns_exist(pool: asyncpg.Pool) -> None:
    contract = {
        "products": [
            "product_id",
            "supplier_id",
            "sku",
            "title",
            "description",
            "sale_price",
            "suggested_price",
            "profit_margin",
            "product_type",
            "url_image_s3",
            "is_active",
            "created_at",
            "updated_at",
            "last_seen_at",
            "raw_data",
        ],
        "suppliers": ["supplier_id", "name", "store_name", "plan_name", "created_at", "updated_at"],
        "warehouses": ["warehouse_id", "city", "first_seen_at", "last_seen_at"],
        "categories": ["id", "name"],
        "product_categories": ["product_id", "category_id"],
        "product_stock_log": ["id", "product_id", "warehouse_id", "stock_qty", "snapshot_at"],
        "product_embeddings": ["product_id", "embedding_visual", "processed_at"],
    }
    for table, columns in contract.items():
        found = {
            r["column_name"]
            for r in await pool.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
            )
        }
        assert set(columns) <= found, (table, set(columns) - found)
    generated = await pool.fetchval(
        "SELECT is_generated FROM information_schema.columns"
        " WHERE table_name = 'products' AND column_name = 'profit_margin'"
    )
    assert generated == "ALWAYS"


async def test_load_json_counts_each_line_once_and_products_apart(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, capsys: Any
) -> None:
    response = {
        "isSuccess": True,
        "objects": [simple_product(10), variable_product(11), {"name": "no id"}],
    }
    lines: list[str | bytes] = [
        legacy_line(simple_product(1), "2025-12-23T01:00:00"),
        json.dumps(response),  # one line, three products, one of them refused
        "{not json",
        "",
        json.dumps([simple_product(12), simple_product(13)]),  # a JSON array: one line
        json.dumps({"isSuccess": True, "objects": ["x", 42]}),  # every product refused
        json.dumps(simple_product(14)),
        '{"id": 15, "na',  # unterminated, in an old file: a line too
    ]
    path = write(tmp_path / "raw_products_20251223.jsonl", lines, newline_at_end=False)
    wc_l = path.read_bytes().count(b"\n")
    assert await load_command.load_files(config, [path], as_json=True) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["lines"] == wc_l + 1 == len(lines)
    assert (out["loaded"], out["rejected"]) == (4, 4)
    assert out["products"] == 12
    assert (out["inserted"], out["products_rejected"]) == (6, 6)
    assert out["inserted"] + out["updated"] + out["unchanged"] + out["products_rejected"] == 12
    assert sum(out["rejected_by_reason"].values()) == out["products_rejected"]
    assert await pool.fetchval("SELECT count(*) FROM rejects") == out["products_rejected"]
    (file_report,) = out["files"]
    assert (file_report["lines"], file_report["products"]) == (8, 12)
    counts = await status_command.gather_counts(pool)
    assert (counts["lines_loaded"], counts["lines_rejected"]) == (4, 4)
    assert counts["products_by_outcome"] == {"inserted": 6, "rejected": 6}
    checkpoint = await pool.fetchrow("SELECT lines_loaded, lines_rejected FROM load_checkpoints")
    assert tuple(checkpoint) == (4, 4)


class _CountingReader:
    """A file object that records every read: how much was asked for and how much came back."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.asked: list[int] = []
        self.returned = 0

    def read(self, size: int = -1) -> bytes:
        self.asked.append(size)
        data: bytes = self._fh.read(size)
        self.returned += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


async def test_a_long_first_line_does_not_read_the_whole_file(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: Any
) -> None:
    config = make_config(pg_dsn, LOADER__MAX_LINE_BYTES="65536")
    long_first = simple_product(1, description="d" * 20_000)  # a real VARIABLE line is ~20 KB
    lines = [json.dumps(long_first)]
    lines += [json.dumps(simple_product(i, description="x" * 3000)) for i in range(2, 400)]
    path = write(tmp_path / "raw_products_20251223.jsonl", lines)
    size = path.stat().st_size
    readers: list[_CountingReader] = []
    real_open = journal.open_source

    def counting_open(p: Path) -> Any:
        readers.append(_CountingReader(real_open(p)))
        return readers[-1]

    monkeypatch.setattr(loader_mod, "open_source", counting_open)
    report = await load(pool, config, path)
    assert (report.stats.lines, report.stats.inserted) == (len(lines), len(lines))
    asked = [n for r in readers for n in r.asked]
    assert all(n is not None and n >= 0 for n in asked), asked  # never "the rest of the file"
    assert sum(r.returned for r in readers) < size + 256 * 1024  # read about once, in pieces


async def test_a_pretty_printed_document_still_loads_whole_and_a_broken_first_line_does_not(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    response = {"isSuccess": True, "objects": [simple_product(1), simple_product(2)]}
    doc = tmp_path / "response.json"
    doc.write_text("\n\n" + json.dumps(response, indent=2) + "\n")
    report = await load(pool, config, doc)
    assert (report.stats.inserted, report.stats.rejected) == (2, 0)
    assert report.stats.lines == len(doc.read_bytes().splitlines())
    # a journal whose writer died inside its first line: JSON Lines, the first line rejected
    lines = ['{"id": 7, "na', *[json.dumps(simple_product(i)) for i in range(3, 6)]]
    report = await load(pool, config, write(tmp_path / "raw_products_20251224.jsonl", lines))
    assert (report.stats.lines, report.stats.inserted, report.stats.rejected) == (4, 3, 1)


async def test_memory_error_stops_the_batch_and_rejects_nothing(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, monkeypatch: Any
) -> None:
    real = dropi._normalise

    def short_of_memory(line: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if line.get("id") == 2 or (line.get("raw_json") or {}).get("id") == 2:
            raise MemoryError
        return real(line, *args, **kwargs)

    lines = [json.dumps(simple_product(i)) for i in range(1, 5)]
    path = write(tmp_path / "raw_products_20251223.jsonl", lines)
    monkeypatch.setattr(dropi, "_normalise", short_of_memory)
    with pytest.raises(MemoryError):
        await load(pool, config, path)
    assert await pool.fetchval("SELECT count(*) FROM rejects") == 0
    assert await pool.fetchval("SELECT count(*) FROM load_checkpoints") == 0
    monkeypatch.setattr(dropi, "_normalise", real)  # memory is back: the batch is tried again
    report = await load(pool, config, path)
    assert (report.stats.inserted, report.stats.rejected) == (4, 0)


async def test_load_command_names_a_memory_error_and_resumes_on_the_next_run(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    real = dropi._normalise

    def short_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("cannot allocate")

    path = write(tmp_path / "a.jsonl", [json.dumps(simple_product(i)) for i in range(1, 4)])
    monkeypatch.setattr(dropi, "_normalise", short_of_memory)
    assert await load_command.load_files(config, [path], as_json=True) == 1
    assert "MemoryError" in capsys.readouterr().err
    monkeypatch.setattr(dropi, "_normalise", real)
    assert await load_command.load_files(config, [path], as_json=True) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["lines"], out["inserted"], out["rejected"]) == (3, 3, 0)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
async def test_running_out_of_file_descriptors_is_not_a_bad_file(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, monkeypatch: Any, code: int
) -> None:
    # The process is out of descriptors, the file is fine: the error goes up to the supervisor
    # (which waits it out) instead of a report that calls the file unreadable.
    path = write(tmp_path / "raw_products_20251223.jsonl", [json.dumps(simple_product(1))])

    def no_descriptor(p: Path) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(loader_mod, "open_source", no_descriptor)
    with pytest.raises(OSError) as raised:
        await load(pool, config, path)
    assert raised.value.errno == code
    monkeypatch.undo()
    report = await load(pool, config, path)
    assert (report.status, report.stats.inserted) == ("loaded", 1)
