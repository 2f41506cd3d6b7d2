"""A loader keeps the rows of the products it wrote for its next batch (`StateCache`), and
reads them again whenever they may have changed behind it: another loader's batch, a write by
hand, a batch that failed or was split to isolate a refused row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from dahell.catalog_store import state as state_mod
from dahell.config import Config
from dahell.stages.loader import FileReport, Loader
from tests.factories import catalog_lines, legacy_line, simple_product
from tests.integration.test_loader_order import TABLES, snapshot, truncate, write


@pytest.fixture
def config(make_config: Any, pg_dsn: str) -> Config:
    return make_config(pg_dsn, LOADER__BATCH_SIZE="2")  # type: ignore[no-any-return]


@pytest.fixture
def products_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The product ids whose `products` row a batch read from the database, in order."""
    read: list[int] = []
    readers = list(state_mod._READERS)
    original = readers[0]

    def read_product(state: Any, row: Any) -> None:
        read.append(row[1])
        original(state, row)

    readers[0] = read_product
    monkeypatch.setattr(state_mod, "_READERS", tuple(readers))
    return read


def line(pid: int, hour: int, **kw: Any) -> str:
    return legacy_line(simple_product(pid, **kw), f"2025-12-23T{hour:02d}:00:00")


async def load(loader: Loader, path: Path, lines: list[str]) -> FileReport:
    return await loader.load_path(write(path, lines))


def new_loader(pool: asyncpg.Pool, config: Config) -> Loader:
    return Loader(pool, lambda: config, structlog.get_logger())


async def stock_log(pool: asyncpg.Pool, pid: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT stock_qty FROM product_stock_log WHERE product_id = $1 ORDER BY snapshot_at", pid
    )
    return [r["stock_qty"] for r in rows]


async def test_a_later_batch_reads_no_row_its_loader_wrote(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, products_read: list[int]
) -> None:
    loader = new_loader(pool, config)
    lines = [line(1, 1), line(2, 1), line(1, 2, stock=4), line(3, 2), line(2, 3), line(1, 3)]
    report = await load(loader, tmp_path / "a.jsonl", lines)
    assert (report.stats.inserted, report.stats.updated, report.stats.unchanged) == (3, 2, 1)
    assert products_read == []  # every product was new when first read, then kept
    await load(loader, tmp_path / "b.jsonl", [line(1, 4, stock=5), line(4, 4)])
    assert products_read == []  # the next file too
    await load(new_loader(pool, config), tmp_path / "c.jsonl", [line(1, 5), line(2, 5)])
    assert products_read == [1, 2]  # another loader reads what it has not written
    assert await stock_log(pool, 1) == [10, 4, 10, 5, 10]


async def test_another_loader_in_between_makes_it_read_again(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, products_read: list[int]
) -> None:
    """Had the first loader trusted its rows, it would take the other's stock 7 for a change
    of its own stock 5 and write a second history row for it."""
    first, other = new_loader(pool, config), new_loader(pool, config)
    await load(first, tmp_path / "a.jsonl", [line(1, 1, stock=5)])
    await load(other, tmp_path / "b.jsonl", [line(1, 2, stock=7)])
    report = await load(first, tmp_path / "c.jsonl", [line(1, 3, stock=7)])
    assert (report.stats.updated, report.stats.unchanged) == (0, 1)
    assert await stock_log(pool, 1) == [5, 7]
    assert products_read == [1, 1]


async def test_rows_removed_by_hand_are_written_again(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    """A TRUNCATE (or DELETE) between two batches: the kept rows say the product exists with
    this content, the table says it does not. The product must be inserted again."""
    loader = new_loader(pool, config)
    await load(loader, tmp_path / "a.jsonl", [line(1, 1), line(2, 1)])
    await pool.execute("DELETE FROM products WHERE product_id = 1")
    report = await load(loader, tmp_path / "b.jsonl", [line(1, 2), line(2, 2)])
    assert (report.stats.inserted, report.stats.unchanged) == (1, 1)
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    report = await load(loader, tmp_path / "c.jsonl", [line(1, 3), line(2, 3)])
    assert report.stats.inserted == 2
    assert await pool.fetchval("SELECT count(*) FROM products") == 2
    assert await stock_log(pool, 2) == [10]


async def test_a_batch_that_fails_before_its_commit_leaves_nothing_kept(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan and the writes change the kept rows before the commit: a batch rolled back
    after them must not leave its rows for the loader's next try."""
    lines = catalog_lines(40, repeat_share=0.5, seed=5)
    path = write(tmp_path / "raw_products_20251223.jsonl", lines)
    await load(new_loader(pool, config), path, lines)
    clean = await snapshot(pool)
    await truncate(pool)

    loader = new_loader(pool, config)
    save = Loader._save_checkpoint
    calls = 0

    async def fail_the_fifth(self: Loader, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk gone before the commit")
        await save(self, *args)

    monkeypatch.setattr(Loader, "_save_checkpoint", fail_the_fifth)
    with pytest.raises(OSError):
        await loader._load_open_file(
            await loader._open_source(path, False), path.open("rb"), FileReport(str(path)), None
        )
    monkeypatch.setattr(Loader, "_save_checkpoint", save)
    report = await loader.load_path(path)
    assert report.stats.lines == len(lines) - 8
    assert await snapshot(pool) == clean


async def test_a_batch_split_around_a_refused_row_leaves_nothing_kept(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    """The refused record changed the kept rows before PostgreSQL refused it: its stock 10
    must not hide the history row of the same stock when the product arrives valid."""
    loader = new_loader(pool, config)
    refused = line(1, 1, price=10**12, suggested_price=None)  # numeric(14,2) overflow
    report = await load(loader, tmp_path / "a.jsonl", [refused, line(2, 1)])
    assert dict(report.stats.rejected_by_reason) == {"db_error:22003": 1}
    report = await load(loader, tmp_path / "b.jsonl", [line(1, 2), line(2, 2)])
    assert (report.stats.inserted, report.stats.unchanged) == (1, 1)
    assert await stock_log(pool, 1) == [10]
    assert await pool.fetchval("SELECT count(*) FROM price_history WHERE product_id = 1") == 1


# --- between the batches of one file ---------------------------------------------------


async def test_another_loader_between_two_batches_of_a_file_makes_it_read_again(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another loader writes stock 7 between the file's two batches: trusting its rows (stock
    5), the loader would take its own stock 7 for a change and log it a second time."""
    other_file = write(tmp_path / "other.jsonl", [line(1, 2, stock=7)])
    commit = Loader._commit
    commits = 0

    async def other_loader_before_the_second(self: Loader, *args: Any, **kw: Any) -> None:
        nonlocal commits
        commits += 1
        if commits == 2:
            await new_loader(pool, config).load_path(other_file)
        await commit(self, *args, **kw)

    monkeypatch.setattr(Loader, "_commit", other_loader_before_the_second)
    lines = [line(1, 1, stock=5), line(2, 1), line(1, 3, stock=7), line(2, 3)]
    report = await load(new_loader(pool, config), tmp_path / "a.jsonl", lines)
    assert (report.stats.inserted, report.stats.updated, report.stats.unchanged) == (2, 0, 2)
    assert await stock_log(pool, 1) == [5, 7]


async def test_a_split_batch_leaves_the_next_one_of_the_file_to_read_again(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    """Kept after the split, the refused record's stock 10 would hide the history row of the
    valid record's stock 10 in the file's next batch."""
    refused = line(1, 1, price=10**12, suggested_price=None)  # numeric(14,2) overflow
    lines = [refused, line(2, 1), line(1, 2), line(2, 2), line(1, 3), line(2, 3)]
    report = await load(new_loader(pool, config), tmp_path / "a.jsonl", lines)
    assert dict(report.stats.rejected_by_reason) == {"db_error:22003": 1}
    assert (report.stats.inserted, report.stats.unchanged) == (2, 3)
    assert await stock_log(pool, 1) == [10]
    assert await pool.fetchval("SELECT count(*) FROM price_history WHERE product_id = 1") == 1


async def test_every_batch_size_gives_the_tables_of_one_batch_with_rows_kept(
    pool: asyncpg.Pool, make_config: Any, pg_dsn: str, tmp_path: Path
) -> None:
    """Many products in several batches each, repeats across batches: planned against the rows
    kept from the batch before, the tables equal those of a load in one batch."""
    lines = catalog_lines(120, repeat_share=0.6, seed=9)
    snapshots = []
    for size in ("1000", "1", "3", "16"):
        config = make_config(pg_dsn, LOADER__BATCH_SIZE=size)
        await truncate(pool)
        report = await load(new_loader(pool, config), tmp_path / f"b{size}.jsonl", lines)
        assert report.stats.lines == len(lines)
        snapshots.append(await snapshot(pool, tuple(t for t in TABLES if t != "load_checkpoints")))
    assert all(s == snapshots[0] for s in snapshots[1:])
