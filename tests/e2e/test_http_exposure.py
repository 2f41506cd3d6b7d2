"""The start-up warning for a status server reachable off this host without a token (issue 12).

The container listens on 0.0.0.0 so that `-p 9464:9464` works; with `http.token` empty that is
an open door, so the daemon names the risk at start-up (`http_exposed_without_token`) instead of
refusing to start. On a loopback address, or with a token, it stays quiet.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import StartDaemon, daemon_env, free_port

LOADER = ("run", "--stages", "loader")


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", "", True),
        ("[::]", "", True),
        ("0.0.0.0", "a-token-for-the-test", False),
        ("127.0.0.1", "", False),
        ("localhost", "", False),
    ],
)
async def test_an_open_listen_address_without_a_token_is_named_at_start_up(
    pg_dsn: str,
    tmp_path: Path,
    start_daemon: StartDaemon,
    host: str,
    token: str,
    warned: bool,
) -> None:
    env = daemon_env(tmp_path / "data", pg_dsn, free_port(), HTTP__TOKEN=token)
    env["DAHELL_HTTP__LISTEN"] = f"{host}:{free_port()}"
    daemon = await start_daemon(env, *LOADER)
    await daemon.wait_for("http_listening")
    await daemon.wait_for("stage_state", where=lambda e: e.get("state") == "running", timeout=60)
    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(60) == 0

    warnings = daemon.named("http_exposed_without_token")
    if not warned:
        assert warnings == [], daemon.output()
        return
    assert len(warnings) == 1, daemon.output()
    (warning,) = warnings
    assert warning["level"] == "warning"
    assert warning["listen"] == env["DAHELL_HTTP__LISTEN"]
    assert "token" in warning["risk"] and "127.0.0.1" in warning["risk"]
