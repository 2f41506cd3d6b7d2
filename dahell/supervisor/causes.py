"""Which errors are a cause outside the stage, and what they said.

A full disk (ENOSPC, EDQUOT, PostgreSQL's 53100, or the embedded server unreachable while its
data disk has less than EMBEDDED_DISK_LOW_BYTES free) is not the stage's fault, nor is running
out of file descriptors (EMFILE for the process, ENFILE for the system: a flood of connections,
or a leak elsewhere, that the stage cannot close): `policy` retries either without limit and
names it in `/healthz` until the stage works again. Both are found anywhere in the error's
chain, and by their text where the error has no errno (Playwright's Node side: "spawn EMFILE").
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

# A restarted stage that ran this long (or did a unit of work) after a full disk has room again.
DISK_FULL_CLEAR_S = 30.0
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_TEXT = re.compile(r"\bENOSPC\b|no space left on device", re.I)
# The embedded server on a data disk with less free than this (a WAL segment and some) is
# taken to be down for the full disk: it PANICs when it cannot write its WAL.
EMBEDDED_DISK_LOW_BYTES = 32 * 1024 * 1024
# A restarted stage that ran this long (or did a unit of work) after the file limit has files.
FILE_LIMIT_CLEAR_S = 30.0
FILE_LIMIT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
FILE_LIMIT_TEXT = re.compile(r"\bE[MN]FILE\b|too many open files", re.I)
CHAIN_LINKS = 10


@dataclass(frozen=True, slots=True)
class Shortage:
    """Something outside the stage that ran out: how /healthz names it and when it is over."""

    reason: str  # the stage's reason while it waits, and the key of `StageRuntime.shortages`
    what: str  # "stage X is out of <what>: <reason>: <detail>"
    recovered_event: str
    clear_after_s: float  # a restart that ran this long (or did a unit of work) has it again


SHORTAGES = (
    Shortage("disk_full", "disk space", "disk_space_recovered", DISK_FULL_CLEAR_S),
    Shortage("out_of_files", "file descriptors", "file_limit_recovered", FILE_LIMIT_CLEAR_S),
)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def free_bytes(path: os.PathLike[str] | str) -> int | None:
    """Bytes free to an unprivileged writer on `path`'s filesystem (None: cannot tell)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it (explicitly or while handling it), up to CHAIN_LINKS deep."""
    seen: BaseException | None = exc
    for _ in range(CHAIN_LINKS):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))}{where}"


def disk_full(exc: BaseException) -> str | None:
    """What a full disk said (the file and the error), if `exc` or what caused it was one."""
    for seen in _chain(exc):
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return _os_error(seen)
        if isinstance(seen, asyncpg.exceptions.DiskFullError):
            return f"PostgreSQL: {_first_line(seen)}"
        if DISK_FULL_TEXT.search(str(seen)):  # Playwright's Node side: text, no errno
            return _first_line(seen)
    return None


def out_of_files(exc: BaseException) -> str | None:
    """What running out of file descriptors said, if `exc` or what caused it was that."""
    for seen in _chain(exc):
        if isinstance(seen, OSError) and seen.errno in FILE_LIMIT_ERRNOS:
            return _os_error(seen)
        if FILE_LIMIT_TEXT.search(str(seen)):  # "spawn EMFILE": text, no errno
            return _first_line(seen)
    return None
