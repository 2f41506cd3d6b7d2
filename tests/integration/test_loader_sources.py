"""The file rules (`dahell.sources`): replaced files, where loading resumes, finished files."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from dahell.config import Config
from dahell.stages.loader import FileReport, Loader, apply_retention
from tests.factories import simple_product

OLD = 1_700_000_000


def line(pid: int, size: int = 0) -> bytes:
    return json.dumps(simple_product(pid, description="d" * size)).encode() + b"\n"


def write(path: Path, data: bytes, mtime: int = OLD) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


async def load(pool: asyncpg.Pool, config: Config, path: Path) -> FileReport:
    loader = Loader(pool, lambda: config, structlog.get_logger())
    try:
        return await loader.load_path(path)
    finally:
        await loader.close()


async def product_ids(pool: asyncpg.Pool) -> set[int]:
    return {r[0] for r in await pool.fetch("SELECT product_id FROM products")}


@pytest.fixture
def config(make_config: Any, pg_dsn: str) -> Config:
    return make_config(pg_dsn)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["raw_products_20251223.jsonl", "raw_products_20251223.jsonl.gz"])
async def test_a_file_shorter_than_its_checkpoint_is_loaded_again_from_the_start(
    pool: asyncpg.Pool, config: Config, tmp_path: Path, name: str
) -> None:
    head = line(1, 6000)  # the first 4 KB stay the same throughout
    path = write(tmp_path / name, head + b"".join(line(i) for i in range(2, 11)))
    assert (await load(pool, config, path)).stats.lines == 10
    write(path, head + line(2), mtime=OLD + 10)  # replaced by a shorter file
    report = await load(pool, config, path)
    assert (report.status, report.stats.lines, report.stats.unchanged) == ("loaded", 2, 2)
    write(path, head + line(2) + line(11) + line(12), mtime=OLD + 20)  # and it grows again
    report = await load(pool, config, path)
    assert (report.stats.lines, report.stats.inserted) == (2, 2)
    assert {11, 12} <= await product_ids(pool)
    assert await pool.fetchval("SELECT count(*) FROM rejects") == 0


async def test_loading_never_resumes_in_the_middle_of_a_line(
    pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    head = line(1, 6000)
    path = write(tmp_path / "raw_products_20251223.jsonl", head + line(2))
    await load(pool, config, path)
    # replaced by a longer file with the same head: the old offset falls inside line 3's text
    write(path, head + line(3, 400) + line(4), mtime=OLD + 10)
    report = await load(pool, config, path)
    assert report.stats.rejected == 0
    assert {3, 4} <= await product_ids(pool)
    assert await pool.fetchval("SELECT count(*) FROM rejects") == 0


async def test_a_finished_gz_is_not_decompressed_again(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, monkeypatch: Any
) -> None:
    config = make_config(pg_dsn, JOURNAL__COMPRESS_AFTER_DAYS="1")
    journal = config.journal_dir
    journal.mkdir(parents=True, exist_ok=True)
    gz = write(journal / "raw_products_20251222.jsonl.gz", b"".join(map(line, range(1, 50))))
    assert (await load(pool, config, gz)).stats.inserted == 49
    plain = write(journal / "raw_products_20251223.jsonl", b"".join(map(line, range(50, 60))))
    assert (await load(pool, config, plain)).stats.inserted == 10
    assert (await apply_retention(pool, config, structlog.get_logger()))["compressed"] == 1
    opened: list[str] = []
    real_open = gzip.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(args[0]))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(gzip, "open", counting_open)
    for path in (gz, plain.with_name(plain.name + ".gz")):
        report = await load(pool, config, path)
        assert (report.status, report.stats.lines) == ("up_to_date", 0)
    assert opened == []  # a stat each, no decompression
    # a finished gz that changed is read again (and found replaced, or up to date)
    write(gz, b"".join(map(line, range(1, 50))) + line(99), mtime=OLD + 5)
    report = await load(pool, config, gz)
    assert (report.stats.lines, report.stats.inserted) == (1, 1)
    assert opened
