"""A full disk during a load: the daemon stays up, /healthz names the disk, freeing space resumes.

/data is a small tmpfs. It is mounted on this host and bound into the container (rather than
podman's own `--mount type=tmpfs`, which is emptied by every stop) so that its content survives
a stop and start: the daemon initialises its embedded server on it first, then, stopped, gets
the 100,000-line journal and a filler file that leaves too little room for the load; started
again, it runs out of space during the load. Deleting the filler inside the container
(`podman exec ... rm`) must be all it takes to finish the load with the counts of a clean one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.engine import (
    MEASURED,
    USER_ID,
    Podman,
    counts,
    free_port,
    http_get,
    line_count,
    place_journal,
    tmp_dir,
    unique,
)

TMPFS_SIZE = "640m"
# Free space left beside the filler: the embedded server's start and a few batches, not 100k.
HEADROOM_BYTES = 48 * 1024 * 1024
STOP_TIMEOUT_S = 45
# Seconds for the daemon to be healthy again once space is freed (its retry backoff is capped
# at supervisor.backoff_max_s, 60 s).
RESUME_TIMEOUT_S = 120

# The session's image build (minutes, uncached) and the clean 100k load run in the first test's
# set-up: the project's 300 s default is too short for them.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A tmpfs of TMPFS_SIZE on this host, owned by the image's user; unmounted afterwards."""
    path = tmp_dir("tmpfs")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},uid={USER_ID},gid={USER_ID},mode=0755",
         "dahell-test-tmpfs", str(path)],
        check=True,
    )  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def fill(data: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free on `data`'s filesystem."""
    stat = os.statvfs(data)
    free = stat.f_bavail * stat.f_frsize
    filler = data / "filler.bin"
    with filler.open("wb") as fh:
        chunk = b"\0" * (1 << 20)
        for _ in range(max(0, (free - leave) // len(chunk))):
            fh.write(chunk)
    os.chown(filler, int(USER_ID), int(USER_ID))
    return filler


def test_a_full_disk_is_named_by_healthz_and_freeing_space_resumes_the_load(
    podman: Podman,
    image: str,
    journal_100k: Path,
    clean_counts: dict[str, Any],
    small_disk: Path,
    names: list[str],
) -> None:
    name = unique("diskfull")
    names.append(name)
    port = free_port()
    started = time.monotonic()
    podman(
        "run", "-d", "--name", name, "--network", "host", "--shm-size", "1g",
        "--stop-timeout", str(STOP_TIMEOUT_S), "-v", f"{small_disk}:/data",
        "-e", f"DAHELL_HTTP__LISTEN=0.0.0.0:{port}",
        "-e", "DAHELL_LOADER__BATCH_SIZE=2000",
        image,
    )  # fmt: skip
    podman.wait_healthy(name)
    # An empty /data: the embedded server is initialised and migrated before it is healthy.
    MEASURED["empty_volume_run_to_healthy_s"] = round(time.monotonic() - started, 1)
    podman("stop", name, timeout=STOP_TIMEOUT_S + 30)
    assert podman.state(name)["ExitCode"] == 0, podman.logs(name)[-4000:]

    journal = place_journal(journal_100k, small_disk)
    journal_bytes = journal.stat().st_size
    fill(small_disk, HEADROOM_BYTES)
    podman("start", name)

    # Out of space during the load: 503 naming the disk, and the daemon keeps running.
    deadline = time.monotonic() + 240
    while True:
        code, body = http_get(port, "/healthz") if _answers(port) else (0, "")
        if code == 503 and "disk_full" in body:
            break
        assert podman.state(name)["Running"], podman.logs(name)[-6000:]
        assert time.monotonic() < deadline, (
            f"no disk_full 503: {code} {body}\n" + podman.logs(name)[-6000:]
        )
        time.sleep(0.5)
    health = json.loads(body)
    assert health["healthy"] is False
    assert any("out of disk space" in r and "disk_full" in r for r in health["reasons"]), health
    assert not podman.healthcheck(name), "the image's HEALTHCHECK passes on a full disk"
    time.sleep(5)  # a few retries on the full disk: still up
    assert podman.state(name)["Running"], podman.logs(name)[-6000:]
    committed = _status(podman, name)
    # Nothing journaled is lost: the journal is intact on the full disk.
    assert journal.stat().st_size == journal_bytes

    podman("exec", name, "rm", "/data/filler.bin")
    # PostgreSQL PANICs when a WAL write meets ENOSPC and its recovery fails on the same full
    # disk: the daemon must start its embedded server again by itself once space is freed.
    podman.wait_healthy(name, timeout=RESUME_TIMEOUT_S)
    status = _wait_loaded(podman, name, line_count(journal_100k))
    assert status["products"] >= committed.get("products", 0)
    assert counts(status) == clean_counts
    events = podman.events(name)
    assert any(e.get("event") == "disk_full" for e in events), "no disk_full event logged"
    MEASURED["disk_full_embedded_server_restarts"] = sum(
        e.get("event") == "embedded_server_restarted" for e in events
    )
    assert not any(e.get("event") == "daemon_exited" for e in _since_last_start(events))
    podman("stop", name, timeout=STOP_TIMEOUT_S + 30)
    assert podman.state(name)["ExitCode"] == 0, podman.logs(name)[-4000:]


def _answers(port: int) -> bool:
    try:
        http_get(port, "/healthz", timeout=3)
    except OSError:
        return False
    return True


def _status(podman: Podman, name: str) -> dict[str, Any]:
    """`status --json` inside the container; {} when the database cannot answer right now."""
    proc = podman("exec", name, "python", "-m", "dahell", "status", "--json", check=False)
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}


def _wait_loaded(podman: Podman, name: str, lines: int, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(podman, name)
        if status and status["lines_loaded"] + status["lines_rejected"] >= lines:
            return status
        assert time.monotonic() < deadline, f"not loaded in {timeout}s: {status}"
        time.sleep(2.0)


def _since_last_start(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    starts = [i for i, e in enumerate(events) if e.get("event") == "daemon_starting"]
    return events[starts[-1] :] if starts else events
