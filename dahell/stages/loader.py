"""The loader: input lines into the catalog tables, each loaded or rejected with a reason, once.

Usable two ways: `Loader.load_path()` imports a file (`python -m dahell load`), and
`LoaderStage` runs inside the daemon, replaying the journal at start-up and then consuming the
scraper's `JournalBatch` messages.

Exactly once: a file's byte offset (and a fingerprint of its head) is committed in the same
transaction as the rows its lines produced, under an advisory lock; the next load resumes there
(where it may resume, and which files are replaced or finished: `dahell.sources`).
One bad line never costs its neighbours: parse failures are rejected one by one, and a batch the
database refuses is split until the refused rows are isolated (`db_error:<sqlstate>`). Only a
line's own content rejects it: any other error (memory, disk, connection) leaves the batch
uncommitted, to be tried again. Counts: each physical line ends once, loaded or rejected; the
products it held are counted apart (`LoadStats`).
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import itertools
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg

from dahell import dropi
from dahell.catalog_store import STAGING, Unit, apply_batch
from dahell.config import Config
from dahell.errors import InputUnreadable
from dahell.journal import (
    RawLine,
    SourceShorter,
    journal_files,
    journal_name,
    open_source,
    read_lines,
)
from dahell.parse_pool import ParsePool, ParsePoolBroken
from dahell.sources import (
    Checkpoint,
    FileState,
    fingerprint,
    is_complete,
    may_be_document,
    read_head,
    remaining_bytes,
    replaced_reason,
    source_key,
)
from dahell.stages.base import Context, EmbedNudge, JournalBatch

#: Smaller sources are parsed in the loader's own thread: starting workers would cost more.
PARALLEL_PARSE_MIN_BYTES = 8 * 1024 * 1024
# Serialises loaders across processes: history rows depend on the state before each batch.
LOADER_LOCK_KEY = 0x6461_6865_6C6C_01
DATA_ERROR_CLASSES = ("21", "22", "23", "54")
LOADED = ("inserted", "updated", "unchanged")
#: The line and product counts of a load, in the order a summary shows them.
SUMMARY_COUNTS = (
    "lines",
    "loaded",
    "rejected",
    "products",
    *LOADED,
    "products_rejected",
)


# Asynchronous commit: a power cut can lose the last few batches, rows and checkpoint together,
# and the next start loads them again from the journal. One round trip with the lock and the
# session's staging tables.
_PROLOGUE = (
    "SET LOCAL synchronous_commit = off;"
    f" SELECT pg_advisory_xact_lock({LOADER_LOCK_KEY});"
    f" {STAGING}"
)
_SAVE_CHECKPOINT = """
WITH totals AS (
    INSERT INTO load_totals AS t (outcome, lines, products)
    SELECT * FROM unnest($10::text[], $11::bigint[], $12::bigint[])
    ON CONFLICT (outcome) DO UPDATE SET lines = t.lines + excluded.lines,
        products = t.products + excluded.products
)
INSERT INTO load_checkpoints AS c (source, fingerprint, head_len, byte_offset, line_no,
    lines_loaded, lines_rejected, completed, file_size, file_mtime_ns, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8, $9, now())
ON CONFLICT (source) DO UPDATE SET fingerprint = excluded.fingerprint,
    head_len = excluded.head_len, byte_offset = excluded.byte_offset,
    line_no = excluded.line_no,
    lines_loaded = c.lines_loaded + excluded.lines_loaded,
    lines_rejected = c.lines_rejected + excluded.lines_rejected,
    file_size = excluded.file_size, file_mtime_ns = excluded.file_mtime_ns,
    updated_at = now()
"""


#: A load allocates millions of short-lived tracked objects (asyncpg Records, tuples, dicts)
#: while it holds two chunks of records: with CPython's default thresholds (700, 10, 10) the
#: cyclic collector took about 30% of a backfill process's CPU (py-spy --gil, 340k lines).
GC_THRESHOLDS = (100_000, 50, 100)


def relax_gc() -> None:
    """Run the cyclic collector less often in a process that loads (never more often than it
    is set to: a threshold someone raised further stays)."""
    current = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(current, GC_THRESHOLDS, strict=True)))


class SourceBusy(Exception):
    """Another process moved this file's checkpoint while we were loading it."""


@dataclass
class LoadStats:
    """Counts by outcome, for lines and for the products they held.

    Each physical line (an unterminated last line included) ends once: `loaded` when at least
    one of its products loaded, else `rejected`; so `loaded + rejected == lines`. Each product
    ends `inserted`, `updated`, `unchanged` or rejected (`products_rejected`, with its reason in
    `rejected_by_reason` and in the `rejects` table); so `inserted + updated + unchanged +
    products_rejected == products`. A line that holds no product it could read (invalid JSON,
    a blank line, an API error) counts as one rejected product. A line holding a whole API
    response is one line and many products.
    """

    lines: int = 0
    loaded: int = 0
    rejected: int = 0
    products: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    products_rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    history_rows: int = 0
    pending_embeddings: int = 0

    COUNTS = (*SUMMARY_COUNTS, "history_rows", "pending_embeddings")

    @property
    def products_loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def add(self, other: LoadStats) -> None:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected_by_reason.update(other.rejected_by_reason)

    def count_product(self, outcome: str, reason: str = "") -> None:
        self.products += 1
        if outcome == "rejected":
            self.products_rejected += 1
            self.rejected_by_reason[reason] += 1
        else:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def count_line(self, loaded: bool, lines: int = 1) -> None:
        """`lines` physical lines ended (more than one only for a whole-document file)."""
        self.lines += lines
        if loaded:
            self.loaded += lines
        else:
            self.rejected += lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "products": self.products,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "products_rejected": self.products_rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "history_rows": self.history_rows,
            "pending_embeddings": self.pending_embeddings,
        }


@dataclass
class FileReport:
    """What happened to one file: `status` is loaded, up_to_date, or error."""

    path: str
    status: str = "loaded"
    stats: LoadStats = field(default_factory=LoadStats)
    start_offset: int = 0
    end_offset: int = 0
    message: str = ""
    pending_tail_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "start_offset": self.start_offset,
            "end_offset": self.end_offset,
            "message": self.message,
            "pending_tail_bytes": self.pending_tail_bytes,
            **self.stats.as_dict(),
        }


@dataclass
class _Item:
    """One unit parsed from a line, waiting for its batch to be written. `physical_lines`: how
    many lines of the file its line stands for (more than one for a whole JSON document)."""

    line: RawLine
    outcome: dropi.Outcome | dropi.Seen
    physical_lines: int = 1


@dataclass
class _Chunk:
    """Parsed lines [start, end) of one source, ready to be written in one transaction."""

    items: list[_Item]
    start: int
    end: int
    end_line_no: int
    pending_tail_bytes: int = 0
    tail_note: str = ""


@dataclass
class _Source:
    key: str
    path: Path
    offset: int
    line_no: int
    head: bytes
    fallback_time: datetime
    live: bool
    state: FileState
    #: Loaded to its end and unchanged since: nothing to open (see `sources.is_complete`).
    complete: bool = False


ProgressCallback = Callable[[int], None]


class Loader:
    """Loads files and journal ranges into the database; one instance per process or stage."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config_getter: Callable[[], Config],
        log: Any,
        on_batch: Callable[[LoadStats, float], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pool = pool
        self.should_stop = should_stop
        self.config_getter = config_getter
        self.log = log
        self.on_batch = on_batch
        self._parse_pool: ParsePool | None = None

    async def close(self) -> None:
        """Stop the parse workers, if any were started."""
        if self._parse_pool is not None:
            pool, self._parse_pool = self._parse_pool, None
            await asyncio.to_thread(pool.close)

    def _parse_pool_for(self, remaining_bytes: int) -> ParsePool | None:
        """Worker processes for a large source (started on first use, kept for the next)."""
        processes = self.config.loader.parse_processes
        if processes == 0 or remaining_bytes < PARALLEL_PARSE_MIN_BYTES:
            return None
        current = self._parse_pool
        if current is not None and (current.broken or current.processes != processes):
            current.close()
            self._parse_pool = None
        if self._parse_pool is None:
            self._parse_pool = ParsePool(processes)
            self.log.info("parse_workers_started", processes=processes)
        return self._parse_pool

    @property
    def config(self) -> Config:
        return self.config_getter()

    # --- files -----------------------------------------------------------------------------

    async def load_path(
        self, path: Path, *, live: bool = False, progress: ProgressCallback | None = None
    ) -> FileReport:
        """Load `path` from its checkpoint to its end. `live`: the file may still be written."""
        report = FileReport(str(path))
        try:
            source = await self._open_source(path, live, skip_complete=True)
        except InputUnreadable as exc:
            report.status, report.message = "error", str(exc)
            return report
        report.start_offset = report.end_offset = source.offset
        if source.complete:
            report.status = "up_to_date"
            return report
        try:
            await self._load_source(source, report, progress)
        except SourceShorter as exc:  # a .gz now shorter than its checkpoint: nothing written
            await self._forget(source, str(exc))
            return await self.load_path(path, live=live, progress=progress)
        if report.status == "loaded" and report.stats.lines == 0:
            report.status = "up_to_date"
        return report

    async def _load_source(
        self, source: _Source, report: FileReport, progress: ProgressCallback | None
    ) -> None:
        path = source.path
        try:
            fh = await asyncio.to_thread(open_source, path)
        except OSError as exc:
            report.status, report.message = "error", f"cannot open {path}: {exc.strerror}"
            return
        try:
            await self._load_open_file(source, fh, report, progress)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            report.status, report.message = "error", f"cannot read {path}: {exc}"
        finally:
            await asyncio.to_thread(fh.close)

    async def _load_open_file(
        self,
        source: _Source,
        fh: IO[bytes],
        report: FileReport,
        progress: ProgressCallback | None,
    ) -> None:
        if source.offset == 0:
            document = await asyncio.to_thread(self._parse_if_document, fh)
            if document is not None:
                await self._commit(source, document, report)
                if progress:
                    progress(document.end)
                await self._mark_complete(source)
                return
        lines = read_lines(
            fh, source.offset, source.line_no, max_line_bytes=self.config.loader.max_line_bytes
        )
        remaining = await asyncio.to_thread(remaining_bytes, fh, source.offset)
        reader = _ChunkReader(lines, source, self.config, self._parse_pool_for(remaining), self.log)
        next_chunk = asyncio.ensure_future(asyncio.to_thread(reader.next_chunk))
        while True:
            chunk = await next_chunk
            if chunk is None:
                break
            next_chunk = asyncio.ensure_future(asyncio.to_thread(reader.next_chunk))
            try:
                await self._commit(source, chunk, report)
            except BaseException:
                next_chunk.cancel()
                raise
            if progress:
                progress(chunk.end)
            if self.should_stop():
                # stop between batches: what is committed is checkpointed; the rest waits
                await asyncio.gather(next_chunk, return_exceptions=True)
                report.message = "stopped before the end (shutting down)"
                return
        report.pending_tail_bytes = reader.pending_tail_bytes
        if reader.pending_tail_bytes:
            report.message = reader.tail_note
        else:
            await self._mark_complete(source)

    async def _mark_complete(self, source: _Source) -> None:
        """A `.gz` read to its end is complete (nothing appends to one): the next rescan
        skips it on its size and mtime alone."""
        if source.path.suffix != ".gz":
            return
        await self.pool.execute(
            "UPDATE load_checkpoints SET completed = true, file_size = $2, file_mtime_ns = $3"
            " WHERE source = $1 AND byte_offset = $4",
            source.key,
            source.state.size,
            source.state.mtime_ns,
            source.offset,
        )

    def _parse_if_document(self, fh: IO[bytes]) -> _Chunk | None:
        """A file that is one JSON document (a pretty-printed API response) is read whole.

        Decided with bounded reads: the file's first non-blank line must start a JSON object or
        array, hold no whole JSON value itself (else it is JSON Lines) and be followed by more
        lines; and the document must fit in `loader.max_line_bytes`, the memory a single line
        may take. Anything else is read line by line, in pieces.
        """
        cap = self.config.loader.max_line_bytes
        if not may_be_document(fh, cap):
            return None
        fh.seek(0)
        data = fh.read(cap + 1)
        if len(data) > cap:
            return None
        outcomes = dropi.parse_document(data, image_base_url=self.config.loader.image_base_url)
        if outcomes is None:
            return None
        physical = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        whole = RawLine(data[: self.config.loader.reject_raw_max_bytes], 0, len(data), 1, True)
        items = [_Item(whole, outcome, physical) for outcome in outcomes]
        return _Chunk(items, 0, len(data), physical + 1)

    async def _open_source(self, path: Path, live: bool, skip_complete: bool = False) -> _Source:
        """The file and where its loading resumes (the start, for a new or replaced file)."""
        key = source_key(path)
        try:
            state = await asyncio.to_thread(FileState.of, path)
        except OSError as exc:
            raise InputUnreadable(f"cannot read {path}: {exc}") from None
        fallback = datetime.fromtimestamp(state.mtime_ns / 1e9, UTC)
        row = await self.pool.fetchrow(
            "SELECT fingerprint, head_len, byte_offset, line_no, completed, file_size,"
            " file_mtime_ns FROM load_checkpoints WHERE source = $1",
            key,
        )
        checkpoint = None if row is None else _checkpoint(row)
        if skip_complete and checkpoint is not None and is_complete(path, checkpoint, state):
            offset, line_no = checkpoint.byte_offset, row["line_no"]
            return _Source(key, path, offset, line_no, b"", fallback, live, state, complete=True)
        try:
            head = await asyncio.to_thread(read_head, path)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputUnreadable(f"cannot read {path}: {exc}") from None
        source = _Source(key, path, 0, 1, head, fallback, live, state)
        if checkpoint is None:
            return source
        reason = await asyncio.to_thread(replaced_reason, path, checkpoint, head, state)
        if reason is not None:
            await self._forget(source, reason)
            return source
        source.offset, source.line_no = checkpoint.byte_offset, row["line_no"]
        return source

    async def _forget(self, source: _Source, reason: str) -> None:
        """The file was replaced: its loading starts again from the start."""
        previous = await self.pool.fetchval(
            "SELECT byte_offset FROM load_checkpoints WHERE source = $1", source.key
        )
        self.log.warning(
            "source_replaced", source=source.key, reason=reason, previous_offset=previous
        )
        await self.pool.execute(
            "UPDATE load_checkpoints SET byte_offset = 0, line_no = 1, head_len = 0,"
            " fingerprint = $2, completed = false, file_size = NULL, file_mtime_ns = NULL,"
            " updated_at = now() WHERE source = $1",
            source.key,
            fingerprint(b""),
        )

    # --- journal batches (the daemon's fast path) ------------------------------------------

    async def load_batches(self, batches: list[JournalBatch]) -> LoadStats:
        """Load contiguous journal batches of one file; ranges already loaded are skipped."""
        total = LoadStats()
        path = batches[0].path
        source = await self._open_source(path, live=True)
        fresh = [b for b in batches if b.end > source.offset]
        if not fresh:
            return total
        if fresh[0].start != source.offset or not _contiguous(fresh):
            report = await self.load_path(path, live=True)  # a gap: read the file itself
            return report.stats
        chunk = await asyncio.to_thread(_parse_batches, fresh, source, self.config)
        report = FileReport(str(path))
        await self._commit(source, chunk, report)
        return report.stats

    # --- the transaction -------------------------------------------------------------------

    async def _commit(self, source: _Source, chunk: _Chunk, report: FileReport) -> None:
        started = time.perf_counter()
        stats = LoadStats()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_PROLOGUE)
            committed = await conn.fetchval(
                "SELECT byte_offset FROM load_checkpoints WHERE source = $1 FOR UPDATE",
                source.key,
            )
            if (committed or 0) != chunk.start:
                raise SourceBusy(
                    f"{source.path}: checkpoint at {committed}, expected {chunk.start}"
                )
            rejects = await self._write_items(conn, source, chunk.items, stats)
            await self._write_rejects(conn, source.key, rejects)
            await self._save_checkpoint(conn, source, chunk, stats)
        source.offset, source.line_no = chunk.end, chunk.end_line_no
        report.end_offset = chunk.end
        report.stats.add(stats)
        elapsed = time.perf_counter() - started
        self.log.info(
            "batch_loaded",
            source=source.key,
            lines=stats.lines,
            loaded=stats.loaded,
            rejected=stats.rejected,
            products=stats.products,
            inserted=stats.inserted,
            updated=stats.updated,
            unchanged=stats.unchanged,
            products_rejected=stats.products_rejected,
            history_rows=stats.history_rows,
            end_offset=chunk.end,
            duration_s=round(elapsed, 4),
        )
        if self.on_batch is not None:
            self.on_batch(stats, elapsed)

    async def _write_items(
        self,
        conn: asyncpg.Connection,
        source: _Source,
        items: list[_Item],
        stats: LoadStats,
    ) -> list[tuple[_Item, str, str]]:
        """Apply the records, isolating rows the database refuses; return the rejects."""
        records = [(i, i.outcome) for i in items if not isinstance(i.outcome, dropi.Rejection)]
        loaded, refused = await self._apply_isolating(conn, source, records, stats)
        rejects = [
            (i, i.outcome.reason, i.outcome.detail)
            for i in items
            if isinstance(i.outcome, dropi.Rejection)
        ]
        rejects.extend(refused)
        rejects.sort(key=lambda r: (r[0].line.offset, r[0].line.line_no))
        for _, outcome in loaded:
            stats.count_product(outcome)
        for _, reason, _ in rejects:
            stats.count_product("rejected", reason)
        _count_lines(items, {id(item) for item, _ in loaded}, stats)
        return rejects

    async def _apply_isolating(
        self,
        conn: asyncpg.Connection,
        source: _Source,
        records: list[tuple[_Item, dropi.ProductRecord | dropi.Seen]],
        stats: LoadStats,
        first: bool = True,
    ) -> tuple[list[tuple[_Item, str]], list[tuple[_Item, str, str]]]:
        """Each record's outcome, and the records the database refused (with their reason).
        `first`: the transaction's first application (its staging tables are still empty)."""
        if not records:
            return [], []
        fallback = source.fallback_time
        units = [
            Unit(
                rec,
                rec.captured_at or fallback,
                self._expander(item) if isinstance(rec, dropi.Seen) else None,
            )
            for item, rec in records
        ]
        try:
            async with conn.transaction():
                result = await apply_batch(conn, units, clear_staging=not first)
        except (asyncpg.PostgresError, asyncpg.exceptions.DataError) as exc:
            sqlstate = getattr(exc, "sqlstate", None) or "22000"
            if not sqlstate.startswith(DATA_ERROR_CLASSES) and isinstance(
                exc, asyncpg.PostgresError
            ):
                raise
            if len(records) == 1:
                detail = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
                return [], [(records[0][0], f"db_error:{sqlstate}", detail)]
            mid = len(records) // 2
            head = await self._apply_isolating(conn, source, records[:mid], stats, first=False)
            tail = await self._apply_isolating(conn, source, records[mid:], stats, first=False)
            return head[0] + tail[0], head[1] + tail[1]
        stats.history_rows += result.history_rows
        stats.pending_embeddings += result.pending_embeddings
        loaded = [
            (item, outcome) for (item, _), outcome in zip(records, result.outcomes, strict=True)
        ]
        return loaded, []

    def _expander(self, item: _Item) -> Callable[[], dropi.ProductRecord] | None:
        """For a `Seen`: the full record, parsed again from the line (called only when the
        database holds other content for that product)."""
        if not isinstance(item.outcome, dropi.Seen):
            return None
        seen, config = item.outcome, self.config

        def expand() -> dropi.ProductRecord:
            outcomes = _parse_one(item.line, config)
            record = outcomes[0] if len(outcomes) == 1 else None
            if (
                not isinstance(record, dropi.ProductRecord)
                or record.content_hash != seen.content_hash
            ):
                raise RuntimeError(f"line {item.line.line_no} parsed differently in the worker")
            return record

        return expand

    async def _write_rejects(
        self, conn: asyncpg.Connection, key: str, rejects: list[tuple[_Item, str, str]]
    ) -> None:
        if not rejects:
            return
        cap = self.config.loader.reject_raw_max_bytes
        rows = [
            (
                key,
                item.line.line_no,
                item.line.offset,
                reason,
                _clean(detail)[:2000],
                _clean(dropi.decode_line(item.line.data[:cap])),
            )
            for item, reason, detail in rejects
        ]
        await conn.copy_records_to_table(
            "rejects",
            records=rows,
            columns=("source", "line_no", "byte_offset", "reason", "detail", "raw_text"),
        )

    async def _save_checkpoint(
        self, conn: asyncpg.Connection, source: _Source, chunk: _Chunk, stats: LoadStats
    ) -> None:
        """The file's new position and the totals, in one statement of the batch's transaction."""
        head_len = min(len(source.head), chunk.end)
        totals = _totals(stats)
        await conn.execute(
            _SAVE_CHECKPOINT,
            source.key,
            fingerprint(source.head[:head_len]),
            head_len,
            chunk.end,
            chunk.end_line_no,
            stats.loaded,
            stats.rejected,
            source.state.size,
            source.state.mtime_ns,
            list(totals),
            [v[0] for v in totals.values()],
            [v[1] for v in totals.values()],
        )


class _ChunkReader:
    """Reads and parses lines into chunks of about `loader.batch_size` units (in a thread).

    With a parse pool, the chunk's lines are parsed in worker processes; should a worker die,
    this chunk and the rest are parsed here instead (logged once as `parse_workers_failed`).
    """

    def __init__(
        self,
        lines: Iterator[RawLine],
        source: _Source,
        config: Config,
        parse_pool: ParsePool | None = None,
        log: Any = None,
    ) -> None:
        self.lines = lines
        self.source = source
        self.config = config
        self.parse_pool = parse_pool
        self.log = log
        self.offset = source.offset
        self.line_no = source.line_no
        self.pending_tail_bytes = 0
        self.tail_note = ""

    def next_chunk(self) -> _Chunk | None:
        start, limit = self.offset, self.config.loader.batch_size
        if self.parse_pool is not None:
            taken = list(itertools.islice(self._lines_to_parse(), limit))
            items = [item for line, outs in self._parse_many(taken) for item in _items(line, outs)]
        else:
            items = []
            for line in self._lines_to_parse():
                items.extend(_items(line, _parse_one(line, self.config)))
                if len(items) >= limit:
                    break
        if self.offset == start:
            return None
        return _Chunk(items, start, self.offset, self.line_no)

    def _lines_to_parse(self) -> Iterator[RawLine]:
        for line in self.lines:
            if not line.terminated and self._leave_for_later(line):
                return
            self.offset, self.line_no = line.end, line.line_no + 1
            yield line

    def _parse_many(
        self, lines: list[RawLine]
    ) -> list[tuple[RawLine, Sequence[dropi.Outcome | dropi.Seen]]]:
        loader = self.config.loader
        wanted = [line for line in lines if not line.too_long]
        if self.parse_pool is not None:
            try:
                parsed = self.parse_pool.parse(
                    [line.data for line in wanted], loader.image_base_url, loader.max_line_bytes
                )
            except ParsePoolBroken as exc:
                if self.log is not None:
                    self.log.warning("parse_workers_failed", detail=str(exc))
                self.parse_pool = None
            else:
                by_line = dict(zip((id(line) for line in wanted), parsed, strict=True))
                return [
                    (line, by_line.get(id(line)) or _parse_one(line, self.config)) for line in lines
                ]
        return [(line, _parse_one(line, self.config)) for line in lines]

    def _leave_for_later(self, line: RawLine) -> bool:
        """An unterminated last line of a file still being written waits for its newline."""
        try:
            age = time.time() - self.source.path.stat().st_mtime
        except OSError:
            age = float("inf")
        if age >= self.config.loader.incomplete_line_grace_s:
            return False
        self.pending_tail_bytes = line.end - line.offset
        self.tail_note = (
            f"last line incomplete ({self.pending_tail_bytes} bytes, file modified {age:.0f}s ago):"
            " left for a later run"
        )
        return True


def _totals(stats: LoadStats) -> dict[str, tuple[int, int]]:
    """`load_totals` increments: lines by line outcome (`loaded`, `rejected`) in `lines`,
    products by product outcome (`inserted`, `updated`, `unchanged`, `rejected`) in
    `products`; outcomes with nothing to add are left out."""
    rows = {
        "loaded": (stats.loaded, 0),
        "rejected": (stats.rejected, stats.products_rejected),
        **{k: (0, getattr(stats, k)) for k in LOADED},
    }
    return {k: v for k, v in rows.items() if any(v)}


def _count_lines(items: list[_Item], loaded: set[int], stats: LoadStats) -> None:
    """One outcome per line: loaded when any of its products loaded."""
    lines: dict[int, bool] = {}
    weight: dict[int, int] = {}
    for item in items:
        key = item.line.offset
        lines[key] = lines.get(key, False) or id(item) in loaded
        weight[key] = item.physical_lines
    for key, was_loaded in lines.items():
        stats.count_line(was_loaded, weight[key])


def _parse_batches(batches: list[JournalBatch], source: _Source, config: Config) -> _Chunk:
    """Journal batches starting at the source's checkpoint, parsed into one chunk."""
    items: list[_Item] = []
    line_no, offset = source.line_no, source.offset
    for batch in batches:
        for data in batch.lines:
            end = offset + len(data) + 1
            line = RawLine(data, offset, end, line_no, True)
            items.extend(_items(line, _parse_one(line, config)))
            offset, line_no = end, line_no + 1
    return _Chunk(items, source.offset, offset, line_no)


def _parse_one(line: RawLine, config: Config) -> list[dropi.Outcome]:
    if line.too_long:
        size = line.end - line.offset - (1 if line.terminated else 0)
        return [dropi.Rejection("line_too_long", f"{size} bytes")]
    return dropi.parse_line(
        line.data,
        image_base_url=config.loader.image_base_url,
        max_line_bytes=config.loader.max_line_bytes,
    )


def _items(line: RawLine, outcomes: Sequence[dropi.Outcome | dropi.Seen]) -> list[_Item]:
    if not line.terminated and len(outcomes) == 1:
        only = outcomes[0]
        if isinstance(only, dropi.Rejection) and only.reason == "invalid_json":
            outcomes = [dropi.Rejection("truncated_line", f"no newline at end: {only.detail}")]
    return [_Item(line, outcome) for outcome in outcomes]


def _checkpoint(row: asyncpg.Record) -> Checkpoint:
    return Checkpoint(
        bytes(row["fingerprint"]),
        row["head_len"],
        row["byte_offset"],
        row["completed"],
        row["file_size"],
        row["file_mtime_ns"],
    )


def _contiguous(batches: list[JournalBatch]) -> bool:
    return all(a.end == b.start for a, b in itertools.pairwise(batches))


def _clean(text: str) -> str:
    return text.replace("\x00", "")


# --- journal retention ---------------------------------------------------------------------


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


# --- the stage -----------------------------------------------------------------------------


class LoaderStage:
    """Replays the journal past its checkpoint, then loads the scraper's batches as they come."""

    name = "loader"
    RESCAN_INTERVAL_S = 60.0
    RETENTION_INTERVAL_S = 3600.0

    def __init__(self) -> None:
        # A batch of another file met while gathering: it opens the next gathering, in order.
        self._carry: JournalBatch | None = None

    async def run(self, ctx: Context) -> None:
        relax_gc()
        loader = Loader(
            ctx.pool,
            lambda: ctx.config,
            ctx.log,
            on_batch=self._reporter(ctx),
            should_stop=ctx.stopping.is_set,
        )
        try:
            await self._serve(ctx, loader)
        finally:
            await loader.close()

    async def _serve(self, ctx: Context, loader: Loader) -> None:
        await self._replay(ctx, loader)
        last_scan = last_retention = time.monotonic()
        await self._retention(ctx)
        while True:
            pending = await self._collect(ctx)
            if pending:
                async with ctx.working():
                    await self._load(ctx, loader, pending)
                continue
            if ctx.stopping.is_set():
                return
            now = time.monotonic()
            if now - last_scan >= self.RESCAN_INTERVAL_S:
                last_scan = now
                await self._replay(ctx, loader)
            if now - last_retention >= self.RETENTION_INTERVAL_S:
                last_retention = now
                await self._retention(ctx)
            ctx.set_idle(True)

    def _reporter(self, ctx: Context) -> Callable[[LoadStats, float], None]:
        def report(stats: LoadStats, seconds: float) -> None:
            for outcome in LOADED:
                ctx.count(outcome, n=getattr(stats, outcome))
            for reason, n in stats.rejected_by_reason.items():
                ctx.count("rejected", reason, n)
            ctx.observe_batch(seconds)
            if stats.pending_embeddings:
                ctx.nudge("vectorizer", EmbedNudge(stats.pending_embeddings))
            ctx.heartbeat()

        return report

    async def _replay(self, ctx: Context, loader: Loader) -> None:
        for path in journal_files(ctx.config.journal_dir):
            if ctx.stopping.is_set():
                return
            async with ctx.working():
                ctx.set_idle(False)
                report = await self._load_file(ctx, loader, path)
            if report.stats.lines:
                ctx.log.info("journal_replayed", path=str(path), **report.stats.as_dict())

    async def _load_file(self, ctx: Context, loader: Loader, path: Path) -> FileReport:
        for attempt in range(3):
            try:
                report = await loader.load_path(path, live=True)
            except SourceBusy as exc:
                ctx.log.warning("source_busy", path=str(path), detail=str(exc), attempt=attempt)
                await asyncio.sleep(0.5)
                continue
            if report.status == "error":
                ctx.log.error("journal_unreadable", path=str(path), detail=report.message)
            return report
        return FileReport(str(path), status="busy")

    async def _collect(self, ctx: Context) -> list[JournalBatch]:
        """Wait for batches; gather contiguous ones of one file up to the size or time limit."""
        first: Any = self._carry or await ctx.receive(timeout=1.0)
        self._carry = None
        if first is None:
            return []
        ctx.set_idle(False)
        if not isinstance(first, JournalBatch):
            return []
        pending = [first]
        lines = len(first.lines)
        deadline = time.monotonic() + ctx.config.loader.batch_max_wait_s
        while lines < ctx.config.loader.batch_size and ctx.inbox is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                nxt = await asyncio.wait_for(ctx.inbox.get(), timeout=left)
            except TimeoutError:
                break
            if not isinstance(nxt, JournalBatch):
                continue
            if nxt.path != pending[-1].path:
                self._carry = nxt
                break
            pending.append(nxt)
            lines += len(nxt.lines)
        return pending

    async def _load(self, ctx: Context, loader: Loader, batches: list[JournalBatch]) -> None:
        try:
            await loader.load_batches(batches)
        except SourceBusy as exc:
            ctx.log.warning("source_busy", path=str(batches[0].path), detail=str(exc))
            await self._load_file(ctx, loader, batches[0].path)

    async def _retention(self, ctx: Context) -> None:
        done = await apply_retention(ctx.pool, ctx.config, ctx.log)
        if any(done.values()):
            ctx.log.info("journal_retention", **done)
