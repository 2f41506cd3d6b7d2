"""Which errors are a cause outside the stage, and what they said.

A full disk (ENOSPC, EDQUOT, PostgreSQL's 53100, or the embedded server unreachable while its
data disk has less than EMBEDDED_DISK_LOW_BYTES free) is not the stage's fault: `policy`
retries it without limit and names it in `/healthz` until the stage works again.
"""

from __future__ import annotations

import errno
import os
import re

import asyncpg

# A restarted stage that ran this long (or did a unit of work) after a full disk has room again.
DISK_FULL_CLEAR_S = 30.0
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_TEXT = re.compile(r"\bENOSPC\b|no space left on device", re.I)
# The embedded server on a data disk with less free than this (a WAL segment and some) is
# taken to be down for the full disk: it PANICs when it cannot write its WAL.
EMBEDDED_DISK_LOW_BYTES = 32 * 1024 * 1024


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def free_bytes(path: os.PathLike[str] | str) -> int | None:
    """Bytes free to an unprivileged writer on `path`'s filesystem (None: cannot tell)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def disk_full(exc: BaseException) -> str | None:
    """What a full disk said (the file and the error), if `exc` or what caused it was one."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            where = f": {seen.filename}" if seen.filename else ""
            return f"{seen.strerror or errno.errorcode[seen.errno]}{where}"
        if isinstance(seen, asyncpg.exceptions.DiskFullError):
            return f"PostgreSQL: {_first_line(seen)}"
        if DISK_FULL_TEXT.search(str(seen)):  # Playwright's Node side: text, no errno
            return _first_line(seen)
        seen = seen.__cause__ or seen.__context__
    return None
