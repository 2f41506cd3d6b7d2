"""Idle rescan benchmark: `python tests/benchmarks/bench_rescan.py [--files N] [--lines M]`.

Puts N finished journal days (`raw_products_YYYYMMDD.jsonl.gz`, M lines each) in a journal
folder, loads them once, then times one idle rescan (what the loader stage does every minute:
`load_path` on every journal file) two ways in the same run:

- dahell: a finished `.gz` whose size and mtime are the ones its checkpoint recorded is skipped
  on a stat;
- baseline: the same rescan with those recorded values cleared, so that each file is opened and
  decompressed up to its checkpoint (what every rescan did before).

Prints the seconds of each, the bytes decompressed, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dahell import config as config_mod  # noqa: E402
from dahell import db  # noqa: E402
from dahell.journal import journal_files  # noqa: E402
from dahell.stages.loader import Loader  # noqa: E402
from tests.factories import catalog_lines  # noqa: E402


def write_days(journal: Path, files: int, lines: int) -> None:
    journal.mkdir(parents=True, exist_ok=True)
    for day in range(files):
        path = journal / f"raw_products_202511{day + 1:02d}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
            fh.write("\n".join(catalog_lines(lines, seed=day)) + "\n")
        os.utime(path, (1_700_000_000, 1_700_000_000))


class CountingGzip:
    """Counts how far `gzip.open` files were decompressed (the cost of a rescan)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._open = gzip.open

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fh = self._open(*args, **kwargs)
        close = fh.close

        def counted_close() -> None:
            self.bytes += fh.tell()  # how far it was decompressed (a seek decompresses too)
            close()

        fh.close = counted_close
        return fh


async def rescan(loader: Loader, journal: Path) -> float:
    started = time.perf_counter()
    for path in journal_files(journal):
        report = await loader.load_path(path, live=True)
        assert report.status == "up_to_date", report
    return time.perf_counter() - started


async def run(dsn: str, data_dir: Path, files: int, lines: int) -> None:
    await db.apply_migrations(dsn)
    config = config_mod.load(
        path=None, env={"DAHELL_PATHS__DATA_DIR": str(data_dir), "DAHELL_DATABASE__DSN": dsn}
    )
    write_days(config.journal_dir, files, lines)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    loader = Loader(pool, lambda: config, structlog.get_logger())
    counter = CountingGzip()
    try:
        for path in journal_files(config.journal_dir):
            await loader.load_path(path)  # the first load (and the first rescan marks them)
        gzip.open = counter
        dahell_s = await rescan(loader, config.journal_dir)
        dahell_bytes, counter.bytes = counter.bytes, 0
        await pool.execute("UPDATE load_checkpoints SET file_size = NULL, file_mtime_ns = NULL")
        baseline_s = await rescan(loader, config.journal_dir)
        baseline_bytes = counter.bytes
    finally:
        gzip.open = counter._open
        await loader.close()
        await pool.close()
    print(f"{files} finished .gz days of {lines:,} lines each")
    print(f"{'rescan':<30}{'seconds':>10}{'MB decompressed':>18}")
    print(f"{'dahell (stat only)':<30}{dahell_s:>10.3f}{dahell_bytes / 1e6:>18.1f}")
    print(f"{'baseline (seek in every .gz)':<30}{baseline_s:>10.3f}{baseline_bytes / 1e6:>18.1f}")
    print(f"baseline / dahell: {baseline_s / max(dahell_s, 1e-9):.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--lines", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dahell-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        server = db.start_embedded(root / "pg")
        try:
            asyncio.run(run(server.dsn, root / "data", args.files, args.lines))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
