"""`python -m dahell load FILE...`: backfill files through the loader, with a summary.

Prints a progress bar (on a terminal) and a summary table, or with `--json` one object:
`lines`, `loaded`, `rejected` (physical lines, each counted once: loaded + rejected == lines,
always), `products`, `inserted`, `updated`, `unchanged`, `products_rejected` (the products those
lines held: inserted + updated + unchanged + products_rejected == products),
`rejected_by_reason` (by product, as in the `rejects` table), and `files` (one entry per file
with its status and the same counts). A line holding a whole API response is one line.
Exit 0 when every file was read to its end (or has nothing new); 1 when a file cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import structlog
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dahell import db
from dahell.config import Config
from dahell.stages.loader import (
    SUMMARY_COUNTS,
    FileReport,
    Loader,
    LoadStats,
    SourceBusy,
    relax_gc,
)

STATUS_TEXT = {
    "loaded": "loaded",
    "up_to_date": "nothing new (already loaded)",
    "error": "ERROR",
    "busy": "busy: another process is loading it",
}


async def load_files(config: Config, files: list[Path], *, as_json: bool) -> int:
    log = structlog.get_logger().bind(command="load")
    reports: list[FileReport] = []
    relax_gc()
    async with db.database(config) as database:
        loader = Loader(database.pool, lambda: config, log)
        show_progress = not as_json and sys.stderr.isatty()
        try:
            for path in files:
                reports.append(await _load_one(loader, path, show_progress))
        finally:
            await loader.close()
    total = LoadStats()
    for report in reports:
        total.add(report.stats)
    if as_json:
        out = {**total.as_dict(), "files": [r.as_dict() for r in reports]}
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        _print_summary(reports, total)
    failed = [r for r in reports if r.status in ("error", "busy")]
    for report in failed:
        sys.stderr.write(f"dahell: {report.path}: {report.message or report.status}\n")
    return 1 if failed else 0


async def _load_one(loader: Loader, path: Path, show_progress: bool) -> FileReport:
    if not path.is_file():
        return FileReport(str(path), status="error", message=f"cannot read {path}: no such file")
    try:
        if not show_progress:
            return await loader.load_path(path)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as progress:
            size = path.stat().st_size if path.suffix != ".gz" else None
            task = progress.add_task(path.name, total=size)
            return await loader.load_path(
                path, progress=lambda offset: progress.update(task, completed=offset)
            )
    except SourceBusy as exc:
        return FileReport(str(path), status="busy", message=str(exc))
    except (MemoryError, OSError) as exc:
        # not the lines' fault: the batch was not committed, and the next run resumes there
        message = f"stopped ({type(exc).__name__}: {exc}); run again to resume"
        return FileReport(str(path), status="error", message=message)


def _counts(stats: LoadStats) -> list[str]:
    return [f"{getattr(stats, column):,}" for column in SUMMARY_COUNTS]


def _print_summary(reports: list[FileReport], total: LoadStats) -> None:
    console = Console()
    table = Table(title="dahell load")
    for column in ("file", "status", *SUMMARY_COUNTS):
        table.add_column(
            column.replace("_", " "), justify="left" if column in ("file", "status") else "right"
        )
    for r in reports:
        status = STATUS_TEXT.get(r.status, r.status)
        if r.pending_tail_bytes:
            status += f"; {r.message}"
        table.add_row(Path(r.path).name, status, *_counts(r.stats))
    table.add_row("total", "", *_counts(total), style="bold")
    console.print(table)
    if total.rejected_by_reason:
        reasons = Table(title="rejected by reason")
        reasons.add_column("reason")
        reasons.add_column("products", justify="right")
        for reason, n in total.rejected_by_reason.most_common():
            reasons.add_row(reason, f"{n:,}")
        console.print(reasons)
    if total.lines == 0 and all(r.status == "up_to_date" for r in reports):
        console.print("Nothing new to load: every file is already loaded up to its end.")
