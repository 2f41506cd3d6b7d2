"""Input files as the loader sees them: identity, checkpoints, where loading may resume.

The file rules, apart from the writer so that each can be tested alone:

- A file's identity is its absolute path without `.gz` (`source_key`): a journal that
  retention compresses keeps its checkpoint.
- A checkpoint holds the byte offset loaded to, a fingerprint of the file's head (its first
  4 KB, or fewer when it was shorter), and the file's size and mtime when it was saved.
- A file is *replaced* (loaded again from its start) when its head no longer matches the
  fingerprint, when it is now shorter than its checkpoint, or when the checkpoint no longer
  falls on a line boundary: loading never resumes in the middle of a line. (A `.gz` file's
  length is known only by decompressing it; its reader reports one shorter than the
  checkpoint, see `journal.SourceShorter`.)
- A file is *complete* (nothing to load, nothing opened) when its checkpoint is at its end and
  its size and mtime are still the ones recorded: an idle rescan costs a `stat`, never a
  decompression of a finished `.gz`.
- One JSON document or JSON Lines: decided with bounded reads (`may_be_document`).

Blocking functions: call them from a thread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from dahell.journal import open_source

HEAD_BYTES = 4096
#: Read size while deciding whether a file is one JSON document.
DETECT_READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FileState:
    """What `stat` says of a file: enough to tell that it has not changed since."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileState:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A `load_checkpoints` row, as far as the file rules need it."""

    fingerprint: bytes
    head_len: int
    byte_offset: int
    completed: bool
    file_size: int | None
    file_mtime_ns: int | None


def source_key(path: Path) -> str:
    """A file's identity in `load_checkpoints`: its absolute path, `.gz` or not."""
    return str(path.resolve()).removesuffix(".gz")


def fingerprint(head: bytes) -> bytes:
    return hashlib.sha256(head).digest()


def read_head(path: Path) -> bytes:
    with open_source(path) as fh:
        return fh.read(HEAD_BYTES)


def is_complete(path: Path, checkpoint: Checkpoint, state: FileState) -> bool:
    """Loaded to its end and unchanged since: no need to open it."""
    if (checkpoint.file_size, checkpoint.file_mtime_ns) != (state.size, state.mtime_ns):
        return False
    if path.suffix == ".gz":
        return checkpoint.completed
    return checkpoint.byte_offset == state.size


def replaced_reason(
    path: Path, checkpoint: Checkpoint, head: bytes, state: FileState
) -> str | None:
    """Why the file is no longer the one its checkpoint describes (None: it still is)."""
    if fingerprint(head[: checkpoint.head_len]) != checkpoint.fingerprint:
        return "head_changed"
    if path.suffix == ".gz":
        return None
    if state.size < checkpoint.byte_offset:
        return "shorter_than_checkpoint"
    if not at_line_boundary(path, checkpoint.byte_offset, state.size):
        return "checkpoint_mid_line"
    return None


def at_line_boundary(path: Path, offset: int, size: int) -> bool:
    """Whether a line starts at `offset`: the byte before it is a newline, or the byte at it is
    (the newline a journal writer adds after a line cut off by a crash, which was rejected as
    `truncated_line` at the old end of the file)."""
    if offset == 0 or offset >= size:
        return True
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        around = fh.read(2)
    return b"\n" in around


def may_be_document(fh: IO[bytes], cap: int) -> bool:
    """Whether the file opens like a multi-line JSON document: its first non-blank line starts
    an object or array, holds no whole JSON value (else it is JSON Lines) and more follows.
    Reads at most about `cap` bytes, and stops at the end of that first line."""
    first, more = first_line(fh, cap)
    if first is None or not more:
        return False  # a first line over the cap, or a file of one line: JSON Lines
    first = first.removeprefix(b"\xef\xbb\xbf").strip()
    if first[:1] not in (b"{", b"["):
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return True
    return False


def first_line(fh: IO[bytes], cap: int) -> tuple[bytes | None, bool]:
    """The first non-blank line (None when it runs past `cap` bytes), and whether anything
    follows its newline."""
    fh.seek(0)
    buf = b""
    while len(buf) <= cap:
        piece = fh.read(DETECT_READ_BYTES)
        if not piece:
            return buf, False
        buf = (buf + piece).lstrip()
        newline = buf.find(b"\n")
        if newline >= 0:
            rest = buf[newline + 1 :].strip() or fh.read(DETECT_READ_BYTES).strip()
            return buf[:newline], bool(rest)
    return None, True


def remaining_bytes(fh: IO[bytes], offset: int) -> int:
    """Bytes left to read past `offset` (for a gzip file, its compressed size: a lower bound)."""
    try:
        return max(0, os.fstat(fh.fileno()).st_size - offset)
    except (OSError, AttributeError, ValueError):
        return 0
