"""The raw journal: `raw_products_YYYYMMDD.jsonl` files, appended and fsynced before use.

The scraper appends each captured page here before it hands the records to the loader, so a
crash loses nothing: start-up replays every file past the loader's committed byte offset.
Files are named by the UTC day of capture, one JSON object per line, the same line format as
the previous system's files (a product with `capture_timestamp` and `raw_json`).
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

JOURNAL_PATTERN = re.compile(r"^raw_products_(\d{8})\.jsonl(\.gz)?$")
READ_CHUNK = 4 * 1024 * 1024


def journal_name(when: datetime) -> str:
    return f"raw_products_{when.astimezone(UTC):%Y%m%d}.jsonl"


@dataclass(frozen=True, slots=True)
class Appended:
    path: Path
    start: int
    end: int


class JournalWriter:
    """Appends whole lines to the day's journal file and fsyncs them (blocking: use a thread)."""

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self._fh: IO[bytes] | None = None
        self._path: Path | None = None

    def append(self, lines: list[bytes], when: datetime) -> Appended:
        """Write `lines` (each without its newline) as one block; return where they landed."""
        path = self.directory / journal_name(when)
        fh = self._open(path)
        start = fh.tell()
        fh.write(b"".join(line + b"\n" for line in lines))
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())
        return Appended(path, start, fh.tell())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._path = None

    def _open(self, path: Path) -> IO[bytes]:
        if self._fh is not None and self._path == path:
            return self._fh
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(path, "ab")  # noqa: SIM115 - kept open across appends
        if fh.tell() > 0 and not _ends_with_newline(path):
            # A writer died mid-line: end that line so it is rejected alone, not glued to ours.
            fh.write(b"\n")
        if self.fsync:
            _fsync_dir(self.directory)
        self._fh, self._path = fh, path
        return fh


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def journal_files(directory: Path) -> list[Path]:
    """Journal files in capture-day order (a compressed file sorts where its plain one would)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if JOURNAL_PATTERN.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: (p.name.removesuffix(".gz"), p.name))


def open_source(path: Path) -> IO[bytes]:
    """Open a file for reading, transparently decompressing `.gz`."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class SourceShorter(Exception):
    """The file is shorter than the offset loading was to resume at: it was replaced."""


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line as read: bytes without the newline, its byte offsets, 1-based line number.

    A line longer than the reader's cap keeps only its first `cap` bytes, with `too_long` set.
    """

    data: bytes
    offset: int
    end: int
    line_no: int
    terminated: bool
    too_long: bool = False


def read_lines(
    fh: IO[bytes],
    start: int = 0,
    first_line_no: int = 1,
    stop: int | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[RawLine]:
    """Yield lines from byte `start` (a line boundary) up to `stop` (or the end).

    The last line is yielded with `terminated=False` when the file does not end in a newline.
    Memory stays bounded by `max_line_bytes` however long a line is. Raises `SourceShorter`
    when the file ends before `start` (a `.gz` file whose length only decompressing tells).
    """
    reached = fh.seek(start)
    if reached != start:
        raise SourceShorter(f"the file ends at byte {reached}, before its checkpoint {start}")
    offset, line_no = start, first_line_no
    pending = b""
    skipped = 0  # bytes of an over-long line dropped beyond the cap
    while True:
        left = None if stop is None else stop - offset - len(pending) - skipped
        want = READ_CHUNK if left is None else min(READ_CHUNK, left)
        chunk = fh.read(want) if want > 0 else b""
        if not chunk:
            break
        buf = pending + chunk
        lines = buf.split(b"\n")
        pending = lines.pop()
        for line in lines:
            end = offset + skipped + len(line) + 1
            too_long = skipped > 0 or (max_line_bytes is not None and len(line) > max_line_bytes)
            data = line[:max_line_bytes] if too_long and max_line_bytes is not None else line
            yield RawLine(data, offset, end, line_no, True, too_long)
            offset, line_no, skipped = end, line_no + 1, 0
        if max_line_bytes is not None and len(pending) > max_line_bytes:
            skipped += len(pending) - max_line_bytes
            pending = pending[:max_line_bytes]
    if pending or skipped:
        yield RawLine(pending, offset, offset + skipped + len(pending), line_no, False, skipped > 0)
