"""Parses input lines in worker processes, beside the loader.

Parsing and normalising a line costs ~45 µs of Python; writing its rows costs the loader's
event loop another ~40 µs and PostgreSQL ~50 µs. In one process the first two share the GIL, so
a large import ran at the speed of their sum. Here the bytes of a chunk go to worker processes
(spawned, so nothing of the parent's event loop or sockets is inherited) and come back as one
msgpack message of `dropi` Structs, which costs ~6 µs a line to decode.

Real files repeat each product many times (one installation: 340,629 lines, 24,227 products),
mostly unchanged. A worker remembers the content hash of each product it last turned into a
record and answers a repeat with a small `dropi.Seen` (id, capture time, hash). The catalog
store needs no more when the database holds that content (the usual case: the repeat only moves
`last_seen_at`); otherwise it has the line parsed again (`expand`). So repeats skip
normalisation and most of the transfer, and nothing is kept per product on this side.

Blocking: call `parse` from a thread, never from the event loop.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import msgspec

from dahell import dropi

Parsed = list[list[dropi.Outcome | dropi.Seen]]

#: Products whose last hash a worker remembers, at most (then it starts again from none).
WORKER_HASHES_MAX = 2_000_000
#: How often a worker checks that its parent is still alive, in seconds.
ORPHAN_CHECK_S = 0.5

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[list[dropi.ProductRecord | dropi.Rejection | dropi.Seen]])
_last_hashes: dict[int, bytes] = {}  # in a worker: product id -> hash of its last record


class ParsePoolBroken(Exception):
    """A worker died (killed, out of memory): the caller parses in its own thread instead."""


def _init_worker(parent: int) -> None:
    """Ctrl-C reaches the whole process group: the parent decides; workers print no traceback.
    A parent killed with SIGKILL cannot stop its workers: each leaves when it is orphaned (and
    so releases the daemon's stdout, which a supervisor may be reading to its end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(0)


def _parse_part(lines: list[bytes], image_base_url: str, max_line_bytes: int) -> bytes:
    if len(_last_hashes) > WORKER_HASHES_MAX:
        _last_hashes.clear()
    outcomes = [
        dropi.parse_line_known(
            line,
            image_base_url=image_base_url,
            max_line_bytes=max_line_bytes,
            last_hashes=_last_hashes,
        )
        for line in lines
    ]
    return _ENCODER.encode(outcomes)


class ParsePool:
    """`processes` spawned workers; a chunk is split into that many parts parsed at once."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.broken = False
        self._executor = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )

    def parse(self, lines: list[bytes], image_base_url: str, max_line_bytes: int) -> Parsed:
        """Each line's outcomes, in order (what `dropi.parse_line_known` gives for it)."""
        if not lines:
            return []
        size = -(-len(lines) // self.processes)
        parsed: Parsed = []
        try:
            futures = [
                self._executor.submit(
                    _parse_part, lines[i : i + size], image_base_url, max_line_bytes
                )
                for i in range(0, len(lines), size)
            ]
            for future in futures:
                parsed.extend(_DECODER.decode(future.result()))
        except BrokenProcessPool as exc:
            self.broken = True
            raise ParsePoolBroken(str(exc) or "a parse worker died") from exc
        return parsed

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
