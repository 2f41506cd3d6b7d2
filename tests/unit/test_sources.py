"""The file rules alone: replaced files, line boundaries, finished files, whole documents."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dahell.sources import (
    Checkpoint,
    FileState,
    at_line_boundary,
    fingerprint,
    is_complete,
    may_be_document,
    replaced_reason,
    source_key,
)

CAP = 64 * 1024


def checkpoint(head: bytes, offset: int, state: FileState, completed: bool = False) -> Checkpoint:
    return Checkpoint(fingerprint(head), len(head), offset, completed, state.size, state.mtime_ns)


def test_a_gz_keeps_the_checkpoint_of_its_plain_file(tmp_path: Path) -> None:
    assert source_key(tmp_path / "a.jsonl.gz") == source_key(tmp_path / "a.jsonl")


def test_shorter_or_mid_line_or_another_head_is_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"first\nsecond\n")
    state = FileState.of(path)
    cp = checkpoint(b"first\nsecond\n", 13, state)
    assert replaced_reason(path, cp, b"first\nsecond\n", state) is None
    path.write_bytes(b"first\n")
    assert replaced_reason(path, cp, b"first\n"[:13], FileState.of(path)) == "head_changed"
    head_only = checkpoint(b"first\n", 13, state)
    assert replaced_reason(path, head_only, b"first\n", FileState.of(path)) == (
        "shorter_than_checkpoint"
    )
    path.write_bytes(b"first\nsecond-and-longer\n")
    mid = checkpoint(b"first\n", 13, state)
    assert replaced_reason(path, mid, b"first\n", FileState.of(path)) == "checkpoint_mid_line"


def test_line_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"one\ntwo\ncut-off\nfour\n")
    size = path.stat().st_size
    assert at_line_boundary(path, 0, size)
    assert at_line_boundary(path, 4, size)
    assert not at_line_boundary(path, 2, size)
    assert at_line_boundary(path, 15, size)  # the newline a writer adds after a cut-off line
    assert at_line_boundary(path, size, size)


def test_a_finished_file_is_known_by_its_stat(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"one\n")
    state = FileState.of(path)
    assert is_complete(path, checkpoint(b"one\n", 4, state), state)
    assert not is_complete(path, checkpoint(b"one\n", 2, state), state)
    moved = FileState(state.size, state.mtime_ns + 1)
    assert not is_complete(path, checkpoint(b"one\n", 4, state), moved)
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(b"")
    assert not is_complete(gz, checkpoint(b"one\n", 4, state), state)  # not marked completed
    assert is_complete(gz, checkpoint(b"one\n", 4, state, completed=True), state)


@pytest.mark.parametrize(
    ("data", "document"),
    [
        (json.dumps({"objects": [{"id": 1}]}, indent=2).encode(), True),
        (b'\n\n  [\n  {"id": 1}\n]\n', True),
        (b'\xef\xbb\xbf{\n"objects": []\n}', True),
        (b'{"id": 1}\n{"id": 2}\n', False),  # JSON Lines
        (b'{"id": 1, "na\n{"id": 2}\n', True),  # a candidate: the caller's parse decides
        (b'{"objects": []', False),  # one line: the line reader handles it
        (b"not json\n{\n}\n", False),
        (b'{"id": 1, "description": "' + b"x" * (2 * CAP) + b'"}\n{}\n', False),  # over the cap
    ],
)
def test_whole_document_detection(data: bytes, document: bool) -> None:
    assert may_be_document(io.BytesIO(data), CAP) is document


def test_detection_reads_a_bounded_amount() -> None:
    class Counting(io.BytesIO):
        read_total = 0

        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and size >= 0
            data = super().read(size)
            Counting.read_total += len(data)
            return data

    long_first = b'{"id": 1, "description": "' + b"x" * 20_000 + b'"}\n'
    fh = Counting(long_first + b'{"id": 2}\n' * 1_000_000)
    assert not may_be_document(fh, CAP)
    assert Counting.read_total <= 3 * CAP
