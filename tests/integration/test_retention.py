"""Journal retention: only fully loaded, old enough files are compressed, then deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from dahell.stages.loader import Loader, apply_retention
from tests.factories import legacy_line, simple_product

DAY = 86400


def journal_file(journal: Path, name: str, ids: range, age_days: float) -> Path:
    journal.mkdir(parents=True, exist_ok=True)
    path = journal / name
    path.write_text(
        "".join(legacy_line(simple_product(i), "2025-12-20T01:00:00") + "\n" for i in ids)
    )
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path


async def test_loaded_old_files_are_compressed_then_deleted_and_unloaded_ones_kept(
    pool: asyncpg.Pool, make_config: Any, pg_dsn: str
) -> None:
    config = make_config(pg_dsn, JOURNAL__COMPRESS_AFTER_DAYS="2", JOURNAL__DELETE_AFTER_DAYS="10")
    journal = config.journal_dir
    loaded_old = journal_file(journal, "raw_products_20251201.jsonl", range(1, 4), 5)
    loaded_ancient = journal_file(journal, "raw_products_20251101.jsonl", range(4, 6), 40)
    loaded_young = journal_file(journal, "raw_products_20251227.jsonl", range(6, 8), 1)
    loader = Loader(pool, lambda: config, structlog.get_logger())
    for path in (loaded_old, loaded_ancient, loaded_young):
        await loader.load_path(path)
    unloaded_old = journal_file(journal, "raw_products_20251202.jsonl", range(8, 10), 5)
    with loaded_young.open("a") as fh:  # grown since it was loaded: not fully loaded
        fh.write(legacy_line(simple_product(99), "2025-12-27T01:00:00") + "\n")

    done = await apply_retention(pool, config, structlog.get_logger())

    assert done == {"compressed": 1, "deleted": 1}
    assert not loaded_old.exists() and loaded_old.with_name(loaded_old.name + ".gz").exists()
    assert not loaded_ancient.exists()
    assert unloaded_old.exists() and loaded_young.exists()
    # A compressed file is recognised as already loaded.
    gz = loaded_old.with_name(loaded_old.name + ".gz")
    report = await loader.load_path(gz)
    assert (report.status, report.stats.lines) == ("up_to_date", 0)
