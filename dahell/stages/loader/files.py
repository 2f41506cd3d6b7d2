"""Loading files and journal ranges: where each source resumes (or starts again, replaced),
whole-document files, and the chunk pipeline that overlaps parsing with writing.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import gzip
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg

import dahell.stages.loader as _package  # read at call time: tests patch names there
from dahell import dropi
from dahell.config import Config
from dahell.errors import InputUnreadable
from dahell.journal import RawLine, SourceShorter, read_lines
from dahell.parse_pool import ParsePool
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
from dahell.stages.base import JournalBatch
from dahell.stages.loader.chunks import (
    _Chunk,
    _ChunkReader,
    _contiguous,
    _Item,
    _parse_batches,
    _Source,
)
from dahell.stages.loader.stats import FileReport, LoadStats
from dahell.stages.loader.writer import BatchWriter

#: A load allocates millions of short-lived tracked objects (asyncpg Records, tuples, dicts)
#: while it holds two chunks of records: with CPython's default thresholds (700, 10, 10) the
#: cyclic collector took about 30% of a backfill process's CPU (py-spy --gil, 340k lines).
GC_THRESHOLDS = (100_000, 50, 100)
#: The process (EMFILE) or the system (ENFILE) is out of file descriptors: not the file's fault.
#: Raised to the supervisor, which waits it out, rather than reported as an unreadable file.
OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})


def relax_gc() -> None:
    """Run the cyclic collector less often in a process that loads (never more often than it
    is set to: a threshold someone raised further stays)."""
    current = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(current, GC_THRESHOLDS, strict=True)))


ProgressCallback = Callable[[int], None]
_T = TypeVar("_T")


class Loader(BatchWriter):
    """Loads files and journal ranges into the database; one instance per process or stage."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config_getter: Callable[[], Config],
        log: Any,
        on_batch: Callable[[LoadStats, float], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(pool, config_getter, log, on_batch)
        self.should_stop = should_stop
        self._parse_pool: ParsePool | None = None

    async def close(self) -> None:
        """Stop the parse workers, if any were started."""
        if self._parse_pool is not None:
            pool, self._parse_pool = self._parse_pool, None
            await asyncio.to_thread(pool.close)

    def _parse_pool_for(self, remaining_bytes: int) -> ParsePool | None:
        """Worker processes for a large source (started on first use, kept for the next)."""
        processes = self.config.loader.parse_processes
        if processes == 0 or remaining_bytes < _package.PARALLEL_PARSE_MIN_BYTES:
            return None
        current = self._parse_pool
        if current is not None and (current.broken or current.processes != processes):
            current.close()
            self._parse_pool = None
        if self._parse_pool is None:
            self._parse_pool = ParsePool(processes)
            self.log.info("parse_workers_started", processes=processes)
        return self._parse_pool

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
            fh = await asyncio.to_thread(_package.open_source, path)
        except OSError as exc:
            _raise_if_out_of_files(exc)
            report.status, report.message = "error", f"cannot open {path}: {exc.strerror}"
            return
        try:
            await self._load_open_file(source, fh, report, progress)
        except _ReadFailed as failed:
            _raise_if_out_of_files(failed.error)
            report.status, report.message = "error", f"cannot read {path}: {failed.error}"
        finally:
            await asyncio.to_thread(fh.close)

    async def _load_open_file(
        self, source: _Source, fh: IO[bytes], report: FileReport, progress: ProgressCallback | None
    ) -> None:
        if source.offset == 0:
            document = await _read(self._parse_if_document, fh)
            if document is not None:
                await self._commit(source, document, report)
                if progress:
                    progress(document.end)
                await self._mark_complete(source)
                return
        lines = read_lines(
            fh, source.offset, source.line_no, max_line_bytes=self.config.loader.max_line_bytes
        )
        remaining = await _read(remaining_bytes, fh, source.offset)
        reader = _ChunkReader(lines, source, self.config, self._parse_pool_for(remaining), self.log)
        next_chunk = asyncio.ensure_future(_read(reader.next_chunk))
        while True:
            chunk = await next_chunk
            if chunk is None:
                break
            next_chunk = asyncio.ensure_future(_read(reader.next_chunk))
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
            _raise_if_out_of_files(exc)
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
            _raise_if_out_of_files(exc)
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


def _checkpoint(row: asyncpg.Record) -> Checkpoint:
    return Checkpoint(
        bytes(row["fingerprint"]),
        row["head_len"],
        row["byte_offset"],
        row["completed"],
        row["file_size"],
        row["file_mtime_ns"],
    )


class _ReadFailed(Exception):
    """Reading the open file failed: `error` is the file's own error."""

    def __init__(self, error: OSError | EOFError) -> None:
        super().__init__(str(error))
        self.error = error


async def _read(read: Callable[..., _T], *args: Any) -> _T:
    """A read of the open file, in a thread. Its errors become `_ReadFailed`: a database error
    met while writing can be an `OSError` too (a statement timeout, a reset connection), and
    is raised as it is, never reported as the file being unreadable."""
    try:
        return await asyncio.to_thread(read, *args)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise _ReadFailed(exc) from exc


def _raise_if_out_of_files(exc: BaseException) -> None:
    if isinstance(exc, OSError) and exc.errno in OUT_OF_FILES:
        raise exc
