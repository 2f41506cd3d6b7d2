"""Which errors mean the process ran out of file descriptors: waited out, named by /healthz."""

from __future__ import annotations

import errno

import pytest

from dahell.supervisor.causes import out_of_files


def chained(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("cannot start the browser") from exc
    except RuntimeError as outer:
        return outer


def implicit(inner: BaseException) -> BaseException:
    """Raised while handling `inner`, without `from`: the chain is `__context__`."""
    try:
        try:
            raise inner
        except OSError:
            raise ValueError("cleanup failed")  # noqa: B904 (the point: no `from`)
    except ValueError as outer:
        return outer


class DriverError(Exception):
    """Playwright's Node side reports a failed spawn as text: no errno."""


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (OSError(errno.EMFILE, "Too many open files", "/data/x"), "Too many open files: /data/x"),
        (OSError(errno.ENFILE, "Too many open files in system"), "Too many open files in system"),
        (chained(OSError(errno.EMFILE, "Too many open files")), "Too many open files"),
        (implicit(OSError(errno.EMFILE, "Too many open files")), "Too many open files"),
        (DriverError("BrowserType.launch: spawn EMFILE\n  at stack"), "spawn EMFILE"),
        (DriverError("Error: EMFILE: too many open files, open '/tmp/x'"), "EMFILE: too many"),
        (OSError("[Errno 24] Too many open files"), "Too many open files"),
    ],
    ids=["EMFILE", "ENFILE", "chained", "implicit", "spawn", "node-open", "text-only-oserror"],
)
def test_running_out_of_file_descriptors_is_recognised_and_named(
    exc: BaseException, needle: str
) -> None:
    found = out_of_files(exc)
    assert found is not None and needle in found
    assert "\n" not in found


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device", "/data"),
        OSError(errno.EIO, "Input/output error"),
        PermissionError(errno.EACCES, "Permission denied", "/data"),
        RuntimeError("boom"),
        TimeoutError("command timeout"),
        DriverError("net::ERR_FILE_NOT_FOUND"),
    ],
)
def test_other_errors_are_not_the_file_limit(exc: BaseException) -> None:
    assert out_of_files(exc) is None
