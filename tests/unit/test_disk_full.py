"""Which errors are a full disk: retried without limit, but named by /healthz."""

from __future__ import annotations

import errno

import asyncpg
import pytest

from dahell.errors import InputUnreadable
from dahell.supervisor.causes import disk_full


def chained() -> BaseException:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/journal/x.jsonl")
        except OSError as exc:
            raise InputUnreadable("cannot append to the journal") from exc
    except InputUnreadable as outer:
        return outer


class PlaywrightLikeError(Exception):
    """What a Node-side write failure looks like from Python: text, no errno."""


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/x"), "/data/x"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/y"), "Disk quota exceeded: /data/y"),
        (chained(), "/data/journal/x.jsonl"),
        (asyncpg.exceptions.DiskFullError('could not extend file "base/1/2"'), "PostgreSQL"),
        (
            PlaywrightLikeError("ENOSPC: no space left on device, write\n  at stack"),
            "ENOSPC: no space left on device, write",
        ),
    ],
)
def test_a_full_disk_is_recognised_and_named(exc: BaseException, needle: str) -> None:
    found = disk_full(exc)
    assert found is not None and needle in found
    assert "\n" not in found


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError(errno.EACCES, "Permission denied", "/data"),
        OSError(errno.EIO, "Input/output error"),
        TimeoutError("command timeout"),
        RuntimeError("boom"),
        asyncpg.exceptions.QueryCanceledError("statement timeout"),
    ],
)
def test_other_errors_are_not_a_full_disk(exc: BaseException) -> None:
    assert disk_full(exc) is None
