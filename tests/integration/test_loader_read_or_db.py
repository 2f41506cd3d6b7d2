"""A file that cannot be read and a database that does not answer are different failures.

A file's own read error (a corrupt `.gz`) reports that file as unreadable, what was loaded
before it kept. A database error met while writing (here a statement that times out, an
`OSError` like a read error) is not the file's fault: it is raised to the caller (the stage
restarts, `dahell load` says "run again to resume"), and the file is not called unreadable.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from dahell import db, load_command
from dahell.config import Config
from dahell.stages.loader import Loader
from dahell.stages.loader.writer import LOADER_LOCK_KEY
from tests.factories import simple_product


def lines(first: int, last: int) -> bytes:
    return b"".join(
        json.dumps(simple_product(pid)).encode() + b"\n" for pid in range(first, last + 1)
    )


@pytest.fixture
def config(make_config: Any, pg_dsn: str) -> Config:
    return make_config(pg_dsn, LOADER__BATCH_SIZE="2")  # type: ignore[no-any-return]


async def test_a_corrupt_gz_is_reported_unreadable_after_its_good_batches(
    pool: asyncpg.Pool, make_config: Any, pg_dsn: str, tmp_path: Path
) -> None:
    config = make_config(pg_dsn, LOADER__BATCH_SIZE="5000")
    path = tmp_path / "raw_products_20251223.jsonl.gz"
    whole = gzip.compress(lines(1, 40_000))
    path.write_bytes(whole[: len(whole) // 2])  # cut in the middle (past the first 4 MB read)
    loader = Loader(pool, lambda: config, structlog.get_logger())
    try:
        report = await loader.load_path(path)
    finally:
        await loader.close()
    assert report.status == "error", report
    assert report.message.startswith(f"cannot read {path}"), report.message
    loaded = await pool.fetchval("SELECT count(*) FROM products")
    assert 0 < report.stats.loaded == loaded < 40_000, report


async def test_a_database_timeout_while_writing_is_raised_not_called_unreadable(
    pool: asyncpg.Pool, config: Config, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "raw_products_20251223.jsonl"
    path.write_bytes(lines(1, 5))
    slow = await asyncpg.create_pool(
        pg_dsn, min_size=1, max_size=2, command_timeout=0.5, init=db._init_connection
    )
    loader = Loader(slow, lambda: config, structlog.get_logger())
    try:
        async with pool.acquire() as other:
            await other.execute("SELECT pg_advisory_lock($1)", LOADER_LOCK_KEY)
            with pytest.raises(TimeoutError):
                await loader.load_path(path)
            await other.execute("SELECT pg_advisory_unlock($1)", LOADER_LOCK_KEY)
        report = await loader.load_path(path)
    finally:
        await loader.close()
        await slow.close()
    assert (report.status, report.stats.loaded) == ("loaded", 5)
    assert await pool.fetchval("SELECT count(*) FROM products") == 5


async def test_dahell_load_says_run_again_when_the_database_times_out(
    make_config: Any, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = tmp_path / "raw_products_20251223.jsonl"
    path.write_bytes(lines(1, 5))
    config = make_config(pg_dsn, DATABASE__COMMAND_TIMEOUT_S="0.5")
    async with pool.acquire() as other:
        await other.execute("SELECT pg_advisory_lock($1)", LOADER_LOCK_KEY)
        code = await load_command.load_files(config, [path], as_json=True)
        await other.execute("SELECT pg_advisory_unlock($1)", LOADER_LOCK_KEY)
    assert code == 1
    err = capsys.readouterr().err
    assert "run again to resume" in err and "cannot read" not in err, err
