"""The start-up warning for a status server reachable off this host without a token (issue 12).

The container listens on 0.0.0.0 so that `-p 9464:9464` works; with `http.token` empty that is
an open door, so the daemon names the risk at start-up (`http_exposed_without_token`) instead of
refusing to start. On a loopback address, or with a token, it stays quiet.

Half-sent requests (issue 17): thousands of connections that never finish their request head
neither exhaust the daemon's files nor lock out /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
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


# --- half-sent requests (issue 17) -----------------------------------------------------------

SLOW_CONNECTIONS = 3000
BATCH = 200
DAEMON_SOFT_FILE_LIMIT = 1024
MAX_CONNECTIONS = 512  # the default


async def _slow_connection(port: int) -> asyncio.StreamWriter | None:
    """A client that sends part of a request line and then nothing more."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return writer


@contextlib.contextmanager
def _soft_file_limit(soft: int) -> Iterator[None]:
    """Processes started inside inherit this soft open-file limit; this one gets its own back."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


async def test_three_thousand_half_sent_requests_leave_healthz_answering(
    pg_dsn: str, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > SLOW_CONNECTIONS + 200, "the test needs a hard open-file limit above 3,200"
    port = free_port()
    env = daemon_env(tmp_path / "data", pg_dsn, port, HTTP__HEADER_TIMEOUT_S="1")
    with _soft_file_limit(DAEMON_SOFT_FILE_LIMIT):
        daemon = await start_daemon(env, *LOADER)
    await daemon.wait_http()
    (raised,) = daemon.named("file_limit_raised")
    assert raised["before"] == DAEMON_SOFT_FILE_LIMIT and raised["after"] == hard

    writers: list[asyncio.StreamWriter | None] = []
    try:
        for _ in range(SLOW_CONNECTIONS // BATCH):
            batch = [_slow_connection(port) for _ in range(BATCH)]
            *opened, health = await asyncio.gather(*batch, daemon.get("/healthz"))
            writers += opened
            assert health[0] == 200, health  # during the flood
        assert sum(w is not None for w in writers) == SLOW_CONNECTIONS
        # Bounded: the cap, plus the database pool, the log pipes and the modules' files.
        assert psutil.Process(daemon.pid).num_fds() < MAX_CONNECTIONS + 200
        status, body = await daemon.get("/healthz")
        assert status == 200 and body["healthy"] is True  # after it
        limit = await daemon.wait_for("http_connection_limit_reached")
        assert limit[0]["max_connections"] == MAX_CONNECTIONS and limit[0]["level"] == "warning"
        await daemon.wait_for("http_header_timeout")  # the slow ones still open are timed out
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    assert daemon.running, daemon.output()
    assert (await daemon.get("/healthz"))[0] == 200
    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(60) == 0, daemon.output()
    errors = [e for e in daemon.events if e.get("level") in ("error", "critical")]
    assert errors == [], errors
    logged = daemon.named("http_connection_limit_reached") + daemon.named("http_header_timeout")
    assert len(logged) < 20, "a flood must not flood the log"
