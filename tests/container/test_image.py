"""The CPU image: what it holds, the demo, and one named volume's whole life.

The lifecycle tests run in file order on one volume: a `kill -s KILL` during a 100,000-line
journal load and a `start`; healthy by the image's own HEALTHCHECK; /healthz, /status and
/metrics on the published port; `stop` drains and exits 0; a second container on the same
volume sees the same data. Counts are compared with a clean load of the same file by the image.
"""

from __future__ import annotations

import json
import time
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
    unique,
)

STOP_TIMEOUT_S = 45
STAGES = ("scraper", "loader", "vectorizer", "groups")

# The session's image build (minutes, uncached) and the clean 100k load run in the first test's
# set-up: the project's 300 s default is too short for them.
pytestmark = pytest.mark.timeout(1800)


def test_the_image_runs_as_its_user_with_a_healthcheck_and_the_locked_cpu_runtime(
    podman: Podman, image: str
) -> None:
    (inspected,) = json.loads(podman("image", "inspect", image).stdout)
    config = inspected["Config"]
    assert config["User"] == f"{USER_ID}:{USER_ID}"
    # Kept only in the docker format (podman build --format docker): the OCI format drops it.
    assert inspected["Healthcheck"]["Test"][0] == "CMD", inspected.get("Healthcheck")
    assert config["StopSignal"] in ("SIGTERM", "15")
    assert "DAHELL_HTTP__LISTEN=0.0.0.0:9464" in config["Env"]
    probe = (
        "import dahell, onnxruntime, importlib.metadata as md; from dahell import db;"
        "print(json.dumps({'dahell': dahell.__file__,"
        " 'migrations': len(db.discover_migrations()),"
        " 'providers': onnxruntime.get_available_providers(),"
        " 'gpu_wheel': any(d.metadata['Name'] == 'onnxruntime-gpu' for d in md.distributions())}))"
    )
    out = podman(
        "run", "--rm", "--entrypoint", "python", image, "-c", "import json;" + probe
    ).stdout  # fmt: skip
    found = json.loads(out)
    # A normal install in the virtual environment, not the source tree, and it finds its SQL.
    assert found["dahell"].startswith("/opt/venv/lib/"), found
    assert found["migrations"] >= 1, found
    assert "CPUExecutionProvider" in found["providers"], found
    assert "CUDAExecutionProvider" not in found["providers"], found
    assert found["gpu_wheel"] is False, found
    user = podman("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
    assert user == USER_ID


def test_demo_no_wait_passes_as_the_image_user(podman: Podman, image: str) -> None:
    name = unique("demo")
    try:
        proc = podman(
            "run", "--name", name, "--network", "host", "--shm-size", "1g",
            "-e", f"DAHELL_HTTP__LISTEN=127.0.0.1:{free_port()}",
            image, "demo", "--no-wait", "--products", "120",
            check=False, timeout=300,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        assert "Done:" in output and "products from" in output, output[-6000:]
        assert podman("inspect", "--format", "{{.Config.User}}", name).stdout.strip() == (
            f"{USER_ID}:{USER_ID}"
        )
    finally:
        podman.remove(name)


class Site:
    """The volume and containers shared by the lifecycle tests below, in order."""

    def __init__(self, podman: Podman, image: str) -> None:
        self.podman = podman
        self.image = image
        self.volume = unique("data")
        self.port = free_port()
        self.first = unique("first")
        self.second = unique("second")
        self.data: Path | None = None
        self.journal: Path | None = None

    def run(self, name: str, *extra: str) -> None:
        """`podman run -d` as the README shows it (network host here: no registry, no CNI)."""
        self.podman(
            "run", "-d", "--name", name, "--network", "host", "--shm-size", "1g",
            "--stop-timeout", str(STOP_TIMEOUT_S), "-v", f"{self.volume}:/data",
            "-e", f"DAHELL_HTTP__LISTEN=0.0.0.0:{self.port}", *extra, self.image,
        )  # fmt: skip

    def status(self, name: str) -> dict[str, Any]:
        return self.podman.exec_json(name, "python", "-m", "dahell", "status", "--json")

    def wait_loaded(self, name: str, lines: int, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if status["lines_loaded"] + status["lines_rejected"] >= lines:
                return status
            assert time.monotonic() < deadline, f"not loaded in {timeout}s: {status}"
            time.sleep(2.0)


@pytest.fixture(scope="module")
def site(podman: Podman, image: str) -> Any:
    s = Site(podman, image)
    yield s
    podman.remove(s.first, s.second)
    podman("volume", "rm", "--force", s.volume, check=False)


def events_since_start(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the latest daemon run in a container's log (it keeps every run's)."""
    starts = [i for i, e in enumerate(events) if e.get("event") == "daemon_starting"]
    return events[starts[-1] :] if starts else events


def test_kill_9_during_a_journal_load_then_start_loses_nothing(
    site: Site, podman: Podman, journal_100k: Path, clean_counts: dict[str, Any]
) -> None:
    site.data = podman.volume(site.volume)
    site.journal = place_journal(journal_100k, site.data)
    site.run(site.first, "-e", "DAHELL_LOADER__BATCH_SIZE=2000")
    deadline = time.monotonic() + 180
    while not any(e.get("event") == "batch_loaded" for e in podman.events(site.first)):
        assert time.monotonic() < deadline, podman.logs(site.first)[-6000:]
        assert podman.state(site.first)["Running"], podman.logs(site.first)[-6000:]
        time.sleep(0.2)
    podman("kill", "--signal", "KILL", site.first)
    podman("wait", site.first, timeout=60)
    before = podman.events(site.first)
    assert not any(e.get("event") == "journal_replayed" for e in before), (
        "the load ended before the kill: the test proves nothing"
    )
    assert podman.state(site.first)["ExitCode"] == 137

    started = time.monotonic()
    podman("start", site.first)
    podman.wait_healthy(site.first)
    MEASURED["start_after_kill_to_healthy_s"] = round(time.monotonic() - started, 1)
    status = site.wait_loaded(site.first, line_count(journal_100k))
    assert counts(status) == clean_counts
    # The embedded server came back by itself: the daemon started on it and answers from it.
    latest = events_since_start(podman.events(site.first))
    assert latest[0]["embedded_database"] is True
    assert any(e.get("event") == "journal_replayed" for e in latest)


def test_healthy_by_its_healthcheck_and_serving_healthz_status_metrics(
    site: Site, podman: Podman
) -> None:
    assert podman.healthcheck(site.first)
    code, body = http_get(site.port, "/healthz")
    assert code == 200 and json.loads(body)["healthy"] is True, body
    code, body = http_get(site.port, "/status")
    assert code == 200, body
    status = json.loads(body)
    assert set(STAGES) <= set(status["stages"]), status
    code, body = http_get(site.port, "/metrics")
    assert code == 200 and "dahell_up" in body, body[:2000]
    # The image listens on all interfaces without a token: the start-up warning says so.
    warned = [
        e
        for e in events_since_start(podman.events(site.first))
        if e.get("event") == "http_exposed_without_token"
    ]
    assert len(warned) == 1 and warned[0]["level"] == "warning", warned


def test_stop_drains_every_stage_and_exits_0_within_the_stop_timeout(
    site: Site, podman: Podman
) -> None:
    started = time.monotonic()
    podman("stop", site.first, timeout=STOP_TIMEOUT_S + 30)
    took = time.monotonic() - started
    MEASURED["stop_s"] = round(took, 1)
    assert took < STOP_TIMEOUT_S
    assert podman.state(site.first)["ExitCode"] == 0, podman.logs(site.first)[-6000:]
    latest = events_since_start(podman.events(site.first))
    last_state = {e["stage"]: e["state"] for e in latest if e.get("event") == "stage_state"}
    # Every stage ends stopped, or stays parked (no credentials, no model: it never had work).
    assert {last_state.get(stage) for stage in latest[0]["stages"]} <= {"stopped", "parked"}, (
        last_state
    )
    assert last_state["loader"] == "stopped", last_state
    assert not [e for e in latest if e.get("event") == "shutdown_timeout"], latest[-30:]
    assert latest[-1]["event"] == "daemon_exited" and latest[-1]["exit_code"] == 0, latest[-5:]


def test_a_second_container_on_the_same_volume_sees_the_same_data(
    site: Site, podman: Podman, clean_counts: dict[str, Any]
) -> None:
    podman("rm", site.first)
    started = time.monotonic()
    site.run(site.second)
    podman.wait_healthy(site.second)
    MEASURED["run_to_healthy_s"] = round(time.monotonic() - started, 1)
    assert counts(site.status(site.second)) == clean_counts
    podman("stop", site.second, timeout=STOP_TIMEOUT_S + 30)
    assert podman.state(site.second)["ExitCode"] == 0, podman.logs(site.second)[-6000:]
