"""Helpers of the container tests: podman with this project's settings, HTTP, journals.

Kept apart from conftest.py so that the tests and the fixtures share one module (and one
MEASURED dict: pytest loads conftest.py under its own module name).

The container image as a user runs it: built from a clean clone of HEAD, run with podman.

CI runs `tests/container/prepare.sh && .venv/bin/python -m pytest tests/container` as root:
prepare.sh installs podman/runc/mmdebstrap when missing, writes the containers.conf this kind of
machine needs and makes the debian:bookworm-slim base from Debian's archive when no registry
answers. Without a container engine that can be installed (not root, no apt-get) every test here
skips with that reason; with one, a missing base or a broken engine is a failure, not a skip.

One CPU image is built per session (podman's layer cache makes a rebuild of unchanged layers
quick) and every check runs against it. Measurements (build time, image size, run -> healthy)
are printed at the end of the session and written to test-artifacts/container.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = os.environ.get("DAHELL_CONTAINERS_CONF", "/etc/containers/dahell-tests.conf")
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/dahell-test:cpu"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
USER_ID = "10001"
JOURNAL_NAME = "raw_products_20251223.jsonl"
# Lines each generated journal ends with: both must end as rejects with a reason.
BAD_LINES = ["this is not json", '{"id": "not-a-number", "name": 12}']
# The counts that must come out equal to a clean load of the same journal.
COUNT_KEYS = (
    "products",
    "suppliers",
    "warehouses",
    "categories",
    "variations",
    "stock_log_rows",
    "variation_stock_log_rows",
    "price_history_rows",
    "lines_loaded",
    "lines_rejected",
    "lines_by_outcome",
    "products_by_outcome",
    "rejects",
    "rejects_by_reason",
)
MEASURED: dict[str, Any] = {}


class Podman:
    """podman with this project's containers.conf; every call has a timeout and is logged."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.env = dict(os.environ)
        if Path(CONTAINERS_CONF).is_file():
            self.env["CONTAINERS_CONF"] = CONTAINERS_CONF

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.exe, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}"
            )
        return proc

    def logs(self, name: str) -> str:
        """Everything the container wrote, stdout and stderr, without podman's own noise."""
        proc = self("logs", name, check=False, timeout=60)
        return proc.stdout + proc.stderr

    def events(self, name: str) -> list[dict[str, Any]]:
        """The container's JSON log lines, in order (across restarts)."""
        found = []
        for line in self.logs(name).splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        found.append(event)
        return found

    def state(self, name: str) -> dict[str, Any]:
        out = self("inspect", "--format", "{{json .State}}", name).stdout
        return dict(json.loads(out))

    def healthcheck(self, name: str) -> bool:
        """Run the image's own HEALTHCHECK command in the container, now."""
        return self("healthcheck", "run", name, check=False, timeout=30).returncode == 0

    def wait_healthy(self, name: str, timeout: float = 240.0) -> float:
        """Seconds until the image's HEALTHCHECK passes; fails early if the container stops."""
        started = time.monotonic()
        while True:
            if self.healthcheck(name):
                return time.monotonic() - started
            state = self.state(name)
            if not state.get("Running"):
                raise AssertionError(
                    f"{name} stopped (exit {state.get('ExitCode')}) before turning healthy:\n"
                    + self.logs(name)[-6000:]
                )
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{name} not healthy in {timeout}s:\n{self.logs(name)[-6000:]}"
                )
            time.sleep(1.0)

    def exec_json(self, name: str, *command: str) -> dict[str, Any]:
        out = self("exec", name, *command, timeout=120).stdout
        return dict(json.loads(out))

    def remove(self, *names: str) -> None:
        for name in names:
            self("rm", "--force", "--time", "0", name, check=False, timeout=60)

    def volume(self, name: str) -> Path:
        """Create a named volume owned by the image's user; returns its folder on this host."""
        self("volume", "create", name)
        mountpoint = Path(
            self("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip()
        )
        os.chown(mountpoint, int(USER_ID), int(USER_ID))
        return mountpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path>; (status, body) also for 4xx/5xx."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def counts(status: dict[str, Any]) -> dict[str, Any]:
    return {key: status[key] for key in COUNT_KEYS}


def place_journal(source: Path, data_dir: Path) -> Path:
    """Copy a journal into `<data_dir>/journal/` (the scraper's name), owned by the image user."""
    journal = data_dir / "journal"
    journal.mkdir(parents=True, exist_ok=True)
    target = journal / JOURNAL_NAME
    shutil.copyfile(source, target)
    for path in (journal, target):
        os.chown(path, int(USER_ID), int(USER_ID))
    return target


def line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def unique(prefix: str) -> str:
    return f"dahell-test-{prefix}-{uuid.uuid4().hex[:8]}"


def tmp_dir(prefix: str) -> Path:
    """A folder the image's user can read (pytest's tmp_path is root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix=f"dahell-container-{prefix}-"))
    path.chmod(0o755)
    return path


def engine_or_skip() -> Podman:
    exe = shutil.which("podman")
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if exe is None:
        if can_install:
            pytest.fail("podman is not installed: run tests/container/prepare.sh first (as root)")
        pytest.skip(
            "no container engine: podman is missing and cannot be installed here "
            "(tests/container/prepare.sh needs root and apt-get)"
        )
    if os.geteuid() != 0:
        pytest.skip("no container engine usable: these tests run root podman; run them as root")
    podman = Podman(exe)
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    assert info.returncode == 0, f"podman does not work here: {info.stderr[-2000:]}"
    return podman
