"""Journal retention: compress, then delete, journal files that are fully loaded and old enough."""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from dahell.config import Config
from dahell.journal import journal_files, journal_name
from dahell.sources import FileState, source_key


async def apply_retention(pool: asyncpg.Pool, config: Config, log: Any) -> dict[str, int]:
    """Compress, then delete, journal files that are fully loaded and old enough."""
    done = {"compressed": 0, "deleted": 0}
    today = journal_name(datetime.now(UTC))
    for path in journal_files(config.journal_dir):
        if path.name.removesuffix(".gz") == today:
            continue  # the writer may still append to it
        row = await pool.fetchrow(
            "SELECT byte_offset, completed FROM load_checkpoints WHERE source = $1",
            source_key(path),
        )
        if row is None:
            continue
        age_days = (time.time() - path.stat().st_mtime) / 86400
        compressed = path.suffix == ".gz"
        size = path.stat().st_size
        fully_loaded = row["completed"] or (not compressed and row["byte_offset"] == size)
        if not fully_loaded:
            continue
        delete_after = config.journal.delete_after_days
        if delete_after > 0 and age_days >= delete_after:
            await asyncio.to_thread(path.unlink)
            done["deleted"] += 1
            log.info("journal_deleted", path=str(path), age_days=round(age_days, 1))
        elif not compressed and age_days >= config.journal.compress_after_days:
            await pool.execute(
                "UPDATE load_checkpoints SET completed = true WHERE source = $1", source_key(path)
            )
            gz = await asyncio.to_thread(_gzip_in_place, path)
            await pool.execute(
                "UPDATE load_checkpoints SET file_size = $2, file_mtime_ns = $3 WHERE source = $1",
                source_key(path),
                gz.size,
                gz.mtime_ns,
            )
            done["compressed"] += 1
            log.info("journal_compressed", path=str(path), age_days=round(age_days, 1))
    return done


def _gzip_in_place(path: Path) -> FileState:
    """Compress `path` to `path.gz` (same mtime), remove it; return the new file's state."""
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    stat = path.stat()
    with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.utime(tmp, (stat.st_atime, stat.st_mtime))
    os.replace(tmp, target)
    path.unlink()
    return FileState.of(target)
