"""Fixtures of the container tests (helpers: engine.py); see engine.py for what runs how.

CI runs `tests/container/prepare.sh && .venv/bin/python -m pytest tests/container` as root.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.engine import (
    BAD_LINES,
    BASE_IMAGE,
    CA_BUNDLE,
    IMAGE,
    MEASURED,
    REPO,
    Podman,
    counts,
    engine_or_skip,
    line_count,
    place_journal,
)


@pytest.fixture(scope="session")
def podman() -> Podman:
    return engine_or_skip()


@pytest.fixture(scope="session")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU image, built from a clean clone of HEAD (uncommitted files stay out)."""
    base = podman("image", "exists", BASE_IMAGE, check=False)
    assert base.returncode == 0, f"{BASE_IMAGE} is missing: run tests/container/prepare.sh first"
    clone = tmp_path_factory.mktemp("clone") / "dahell"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-local", "--depth", "1", f"file://{REPO}", str(clone)],
        check=True,
        timeout=300,
    )
    args = ["build", "--format", "docker", "--build-arg", "ONNXRUNTIME=cpu", "-t", IMAGE]
    args += ["--label", "dahell.test=container"]
    if CA_BUNDLE.is_file():
        args += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    started = time.monotonic()
    podman(*args, str(clone), timeout=1500)
    MEASURED["build_s"] = round(time.monotonic() - started, 1)
    # The image this build replaced, now untagged: only ours (by label), never anyone else's.
    podman("image", "prune", "--force", "--filter", "label=dahell.test=container", check=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    MEASURED["image_bytes"] = size
    MEASURED["image_gb"] = round(size / 1e9, 3)
    return IMAGE


@pytest.fixture(scope="session")
def journal_100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100,000 generated catalog lines plus two bad ones."""
    from tests.factories import catalog_lines

    path = tmp_path_factory.mktemp("journal") / "lines_100k.jsonl"
    path.write_text("\n".join([*catalog_lines(100_000), *BAD_LINES]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def clean_counts(podman: Podman, image: str, journal_100k: Path) -> dict[str, Any]:
    """The counts of an uninterrupted load of journal_100k, by the image, on a fresh volume."""
    volume = f"dahell-test-clean-{uuid.uuid4().hex[:8]}"
    try:
        place_journal(journal_100k, podman.volume(volume))
        podman(
            "run", "--rm", "--network", "host", "-v", f"{volume}:/data",
            "-e", "DAHELL_HTTP__ENABLED=false",
            image, "run", "--stages", "loader", "--exit-when-idle",
            timeout=600,
        )  # fmt: skip
        out = podman("run", "--rm", "--network", "host", "-v", f"{volume}:/data", image,
                     "status", "--json", timeout=120).stdout  # fmt: skip
        status = json.loads(out)
        assert status["lines_loaded"] + status["lines_rejected"] == line_count(journal_100k)
        return counts(status)
    finally:
        podman("volume", "rm", "--force", volume, check=False)


@pytest.fixture
def names(podman: Podman) -> Iterator[list[str]]:
    """Container names to remove at the end of a test (and volumes: prefix `volume:`)."""
    made: list[str] = []
    yield made
    for name in made:
        if name.startswith("volume:"):
            podman("volume", "rm", "--force", name.removeprefix("volume:"), check=False)
        else:
            podman.remove(name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MEASURED:
        return
    terminalreporter.write_sep("-", "container measurements")
    for key, value in MEASURED.items():
        terminalreporter.write_line(f"{key}: {value}")
    out = REPO / "test-artifacts" / "container.json"
    with contextlib.suppress(OSError):
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(MEASURED, indent=2) + "\n")
