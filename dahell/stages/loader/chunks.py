"""Reading a source into chunks: lines from the file's checkpoint, parsed (in worker
processes for a large file) into the units one transaction writes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dahell import dropi
from dahell.config import Config
from dahell.journal import RawLine
from dahell.parse_pool import ParsePool, ParsePoolBroken
from dahell.sources import FileState
from dahell.stages.base import JournalBatch


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


def _contiguous(batches: list[JournalBatch]) -> bool:
    return all(a.end == b.start for a, b in itertools.pairwise(batches))
