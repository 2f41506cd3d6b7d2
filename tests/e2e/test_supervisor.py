"""The real Supervisor, in-process, driving stages that misbehave on purpose.

The faults live here, in test stages: one that hangs while it has work, one that refuses to
die when cancelled, one that crashes every time. The stall timeout is read from the config
section named like the stage, so the test stages are called "loader" and "vectorizer".
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog

from dahell import config as config_mod
from dahell.errors import DatabaseUnavailable
from dahell.http import StatusServer
from dahell.stages.base import Context, StageState
from dahell.supervisor import Supervisor
from dahell.supervisor import policy as supervisor_mod
from tests.e2e.conftest import free_port

MakeConfig = Callable[..., config_mod.Config]
FAST = {
    "SUPERVISOR__BACKOFF_INITIAL_S": "0.01",
    "SUPERVISOR__BACKOFF_MAX_S": "0.05",
    "SUPERVISOR__SHUTDOWN_TIMEOUT_S": "2",
}


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event, at every level, while the test runs."""
    old = structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)


@pytest.fixture
async def signals_restored() -> AsyncIterator[None]:
    """Supervisor.run() installs signal handlers on the (shared) loop: take them off after."""
    yield
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)


def events(logs: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e for e in logs if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
    ]


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as resp,
    ):
        return resp.status, await resp.json()


# --- test stages ---------------------------------------------------------------------------


class HangingStage:
    """Has work and stops making progress on its first run; behaves afterwards."""

    name = "loader"

    def __init__(self) -> None:
        self.started: list[float] = []
        self.recovered = asyncio.Event()

    async def run(self, ctx: Context) -> None:
        self.started.append(time.monotonic())
        if len(self.started) == 1:
            async with ctx.working():
                await self.hang_forever()
        self.recovered.set()
        while not await ctx.sleep(0.1):
            ctx.count("inserted")

    async def hang_forever(self) -> None:
        await asyncio.Event().wait()


class StubbornStage:
    """Hangs while it has work and swallows the watchdog's cancellation: it stays stalled."""

    name = "loader"

    def __init__(self) -> None:
        self.cancels = 0

    async def run(self, ctx: Context) -> None:
        async with ctx.working():
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancels += 1
                    if self.cancels > 1:  # shutdown insists
                        raise


class CrashingStage:
    name = "loader"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        raise RuntimeError(f"boom #{self.runs}")


class SteadyStage:
    """Works and heartbeats until shutdown."""

    name = "vectorizer"

    async def run(self, ctx: Context) -> None:
        while not await ctx.sleep(0.05):
            ctx.count("done")


# --- stalls --------------------------------------------------------------------------------


async def test_a_hanging_stage_is_restarted_within_its_stall_timeout_with_its_stack_logged(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    config = make_config(LOADER__STALL_TIMEOUT_S="1", **FAST)
    stage = HangingStage()
    supervisor = Supervisor(config, [stage], pool)
    seen: list[tuple[str, bool, list[str]]] = []
    supervisor.on_state_change = lambda name, old, new, reason: seen.append(
        (new, *supervisor.healthy())
    )
    running = asyncio.create_task(supervisor.run())
    try:
        await asyncio.wait_for(stage.recovered.wait(), timeout=10)
    finally:
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=10)
    assert code == 0

    # Restarted within its stall timeout (1 s), plus the watchdog's 1 s tick and the backoff.
    assert len(stage.started) == 2
    assert stage.started[1] - stage.started[0] < 1.0 + 1.0 + 1.0
    (stalled,) = events(logs, "stage_stalled", stage="loader")
    assert stalled["stall_timeout_s"] == 1.0 and stalled["silent_s"] >= 1.0
    assert "hang_forever" in stalled["stack"], stalled["stack"]
    assert "test_supervisor.py" in stalled["stack"]
    (restarted,) = events(logs, "stage_restarted", stage="loader")
    assert restarted["reason"] == "stalled" and restarted["restarts"] == 1
    rt = supervisor.runtimes["loader"]
    assert rt.restarts == 1 and rt.last_error == "no progress within stall_timeout_s"
    # While it was stalled, the process was unhealthy; afterwards healthy again.
    states = [s for s, _, _ in seen]
    assert states[:4] == ["running", "stalled", "backoff", "running"], states
    at_stall = seen[1]
    assert at_stall[1] is False and at_stall[2] == ["stage loader is stalled: no_progress"]
    assert seen[3][1] is True


async def test_healthz_answers_503_while_a_stage_is_stalled(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    port = free_port()
    config = make_config(LOADER__STALL_TIMEOUT_S="1", HTTP__LISTEN=f"127.0.0.1:{port}", **FAST)
    stage = StubbornStage()
    supervisor = Supervisor(config, [stage, SteadyStage()], pool)
    server = StatusServer(supervisor)
    await server.start()
    running = asyncio.create_task(supervisor.run())
    try:
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body["healthy"] is True
        loader = supervisor.runtimes["loader"]
        await until(lambda: loader.state == StageState.STALLED, what="a stalled loader")
        await until(lambda: stage.cancels == 1, what="the watchdog's cancel")
        await asyncio.sleep(0.2)  # the cancel was swallowed: it stays stalled
        assert loader.state == StageState.STALLED
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 503
        assert body["healthy"] is False
        assert body["reasons"] == ["stage loader is stalled: no_progress"]
        assert body["stages"] == {"loader": "stalled", "vectorizer": "running"}
        assert events(logs, "stage_stalled", stage="loader")
    finally:
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=15)
        await server.close()
    assert code == 0


# --- crash loops ---------------------------------------------------------------------------


async def test_a_crash_loop_reaches_failed_and_exit_policy_returns_non_zero(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    config = make_config(SUPERVISOR__MAX_RESTARTS="2", SUPERVISOR__ON_STAGE_FAILURE="exit", **FAST)
    crashing, steady = CrashingStage(), SteadyStage()
    supervisor = Supervisor(config, [crashing, steady], pool)
    code = await asyncio.wait_for(supervisor.run(), timeout=15)

    assert code != 0
    assert crashing.runs == 3  # the first run and max_restarts restarts
    rt = supervisor.runtimes["loader"]
    assert rt.state == StageState.FAILED and rt.restarts == 2
    assert rt.last_error == "RuntimeError: boom #3"
    (failed,) = events(logs, "stage_failed", stage="loader")
    assert failed["policy"] == "exit" and failed["max_restarts"] == 2
    assert len(events(logs, "stage_crashed", stage="loader")) == 3
    backoffs = [e["backoff_s"] for e in events(logs, "stage_restarted", stage="loader")]
    assert len(backoffs) == 2 and all(b <= 0.05 for b in backoffs)
    # Everything else was stopped cleanly.
    assert supervisor.runtimes["vectorizer"].state == StageState.STOPPED
    assert events(logs, "shutdown_requested", exit_code=code)


async def test_a_failed_stage_under_degrade_leaves_the_rest_running_and_healthz_503(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    port = free_port()
    config = make_config(
        SUPERVISOR__MAX_RESTARTS="2",
        SUPERVISOR__ON_STAGE_FAILURE="degrade",
        HTTP__LISTEN=f"127.0.0.1:{port}",
        **FAST,
    )
    crashing = CrashingStage()
    supervisor = Supervisor(config, [crashing, SteadyStage()], pool)
    server = StatusServer(supervisor)
    await server.start()
    running = asyncio.create_task(supervisor.run())
    try:
        loader, vectorizer = supervisor.runtimes["loader"], supervisor.runtimes["vectorizer"]
        await until(lambda: loader.state == StageState.FAILED, what="a failed loader")
        done_before = vectorizer.ctx.counters[("done", "")]
        await asyncio.sleep(0.5)
        assert not running.done()  # degrade: the process goes on
        assert vectorizer.state == StageState.RUNNING
        await until(  # and so does the work
            lambda: vectorizer.ctx.counters[("done", "")] > done_before, what="more work done"
        )
        assert crashing.runs == 3  # a failed stage is not restarted again

        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 503
        assert body["stages"] == {"loader": "failed", "vectorizer": "running"}
        assert body["reasons"] == ["stage loader is failed: too_many_restarts"]
        _, full = await get_json(f"http://127.0.0.1:{port}/status")  # the text is on /status
        text = "stage loader is failed: RuntimeError: boom #3"
        assert full["unhealthy_reasons"][0].startswith(text)
        assert supervisor.healthy()[0] is False
        (failed,) = events(logs, "stage_failed", stage="loader")
        assert failed["policy"] == "degrade"
    finally:
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=15)
        await server.close()
    assert code == 0
    assert supervisor.runtimes["loader"].state == StageState.FAILED  # kept, for the record


# --- what counts as a crash: only a lost database is waited out ---------------------------


class FailingStage:
    """Raises the next of its errors on each run; once they are used up, works until shutdown."""

    name = "loader"

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.runs = 0
        self.working = asyncio.Event()

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        if self.errors:
            raise self.errors.pop(0)
        self.working.set()
        while not await ctx.sleep(0.05):
            ctx.count("inserted")


class DiskFullStage:
    """Fails to write while `full` is set, as the journal does on a full disk; then works."""

    name = "loader"

    def __init__(self) -> None:
        self.full = True
        self.runs = 0

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/journal/x.jsonl")
        while not await ctx.sleep(0.05):
            ctx.count("inserted")


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "Permission denied", "/data/journal"),
        TimeoutError("command timed out"),
        OSError(errno.EIO, "Input/output error", "/data/journal/x.jsonl"),
    ],
    ids=["EACCES", "timeout", "EIO"],
)
async def test_an_os_error_that_is_not_the_database_is_a_crash_that_counts(
    error: BaseException,
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    port = free_port()
    config = make_config(
        SUPERVISOR__MAX_RESTARTS="2",
        SUPERVISOR__ON_STAGE_FAILURE="degrade",
        HTTP__LISTEN=f"127.0.0.1:{port}",
        **FAST,
    )
    stage = FailingStage([error] * 10)
    supervisor = Supervisor(config, [stage, SteadyStage()], pool)
    changes: list[tuple[str, str]] = []
    supervisor.on_state_change = lambda name, old, new, reason: changes.append((new, reason))
    server = StatusServer(supervisor)
    await server.start()
    running = asyncio.create_task(supervisor.run())
    try:
        loader = supervisor.runtimes["loader"]
        await until(lambda: loader.state == StageState.FAILED, what="a failed loader")
        assert stage.runs == 3
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 503
        assert body["reasons"] == ["stage loader is failed: too_many_restarts"]
        _, full = await get_json(f"http://127.0.0.1:{port}/status")  # the text is on /status
        assert type(error).__name__ in full["unhealthy_reasons"][0]
        assert len(events(logs, "stage_crashed", stage="loader")) == 3
        assert not events(logs, "stage_restarted", reason="database_unavailable")
        assert changes[-1][0] == "failed"  # what the alerts are sent from
    finally:
        supervisor.request_stop(0, "test over")
        await asyncio.wait_for(running, timeout=15)
        await server.close()


async def test_a_lost_database_is_waited_out_beyond_max_restarts(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    refused = await _error_from(asyncpg.connect(f"postgresql://u@127.0.0.1:{free_port()}/x"))
    errors: list[BaseException] = [
        DatabaseUnavailable("cannot connect to PostgreSQL: refused"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        refused,
    ]
    config = make_config(SUPERVISOR__MAX_RESTARTS="1", **FAST)
    stage = FailingStage(errors)
    supervisor = Supervisor(config, [stage], pool)
    running = asyncio.create_task(supervisor.run())
    try:
        await asyncio.wait_for(stage.working.wait(), timeout=10)
        assert supervisor.healthy()[0] is True
    finally:
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=15)
    assert code == 0 and stage.runs == 5
    waits = events(logs, "stage_restarted", reason="database_unavailable")
    assert len(waits) == 4
    assert not events(logs, "stage_crashed") and not events(logs, "stage_failed")


async def test_a_full_disk_is_unhealthy_and_named_retried_and_resumes_when_space_returns(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    port = free_port()
    config = make_config(
        SUPERVISOR__MAX_RESTARTS="1",
        SUPERVISOR__ON_STAGE_FAILURE="exit",
        HTTP__LISTEN=f"127.0.0.1:{port}",
        **FAST,
    )
    stage = DiskFullStage()
    supervisor = Supervisor(config, [stage, SteadyStage()], pool)
    changes: list[tuple[str, str, str]] = []
    supervisor.on_state_change = lambda name, old, new, reason: changes.append((name, new, reason))
    server = StatusServer(supervisor)
    await server.start()
    running = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: stage.runs > 5, what="several retries")
        assert not running.done()  # more than max_restarts, yet not failed: the process stays
        loader = supervisor.runtimes["loader"]
        assert loader.state != StageState.FAILED
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 503, body
        assert body["reasons"] == ["stage loader is out of disk space: disk_full"]
        _, full = await get_json(f"http://127.0.0.1:{port}/status")  # the path is on /status
        (reason,) = full["unhealthy_reasons"]
        assert "disk_full" in reason and "/data/journal/x.jsonl" in reason
        assert full["stages"]["loader"]["reason"] == "disk_full"
        assert ("loader", "backoff", "disk_full") in changes  # what the alert is sent from
        metrics = await get_text(f"http://127.0.0.1:{port}/metrics")
        assert 'dahell_stage_disk_full{stage="loader"} 1.0' in metrics
        assert 'dahell_stage_disk_full{stage="vectorizer"} 0.0' in metrics
        assert "dahell_up 0.0" in metrics

        stage.full = False  # space freed: it resumes by itself
        await until(lambda: supervisor.healthy()[0], what="healthy again")
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body["stages"]["loader"] == "running"
        assert loader.ctx.counters[("inserted", "")] > 0
        assert changes[-1] == ("loader", "running", "")
    finally:
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=15)
        await server.close()
    assert code == 0
    assert not events(logs, "stage_failed")
    assert events(logs, "stage_restarted", reason="disk_full")
    assert len(events(logs, "disk_full", stage="loader")) == 1  # one error line, not one a retry


async def get_text(url: str) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as resp,
    ):
        return await resp.text()


async def _error_from(coro: Any) -> BaseException:
    try:
        await coro
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


async def test_a_lost_embedded_database_on_a_full_disk_is_a_full_disk(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The embedded server PANICs when it cannot write its WAL: the stages only see it gone.
    free = {"bytes": 4096}
    monkeypatch.setattr(supervisor_mod, "free_bytes", lambda path: free["bytes"])
    config = make_config(SUPERVISOR__MAX_RESTARTS="1", **FAST)  # no dsn: the embedded server
    lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    stage = FailingStage([lost] * 4)
    supervisor = Supervisor(config, [stage], pool)
    running = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: stage.runs >= 2, what="a retry")
        healthy, reasons = supervisor.healthy()
        assert not healthy and "disk_full" in reasons[0]
        assert str(config.data_dir) in reasons[0]
        free["bytes"] = 10 << 30  # space freed: the next losses are the database's own
        await asyncio.wait_for(stage.working.wait(), timeout=10)
        await until(lambda: supervisor.healthy()[0], what="healthy again")
    finally:
        supervisor.request_stop(0, "test over")
        await asyncio.wait_for(running, timeout=15)
    assert events(logs, "disk_full", stage="loader")
    assert not events(logs, "stage_failed")


# --- out of file descriptors: waited out like a full disk, never a crash --------------------


class LaunchError(Exception):
    """What Playwright raises when the driver or the browser cannot spawn: text, no errno."""


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files", "/data/journal/x.jsonl")


def wrapped_emfile() -> BaseException:
    try:
        try:
            raise emfile()
        except OSError as exc:
            raise RuntimeError("cannot open the journal") from exc
    except RuntimeError as outer:
        return outer


def spawn_emfile() -> BaseException:
    return LaunchError("BrowserType.launch: spawn EMFILE\nCall log:\n  - <launching>")


class FileLimitStage:
    """Fails with `error()` while `exhausted` is set, as any stage does at the file limit."""

    name = "loader"

    def __init__(self, error: Callable[[], BaseException]) -> None:
        self.error = error
        self.exhausted = True
        self.runs = 0

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        if self.exhausted:
            raise self.error()
        while not await ctx.sleep(0.05):
            ctx.count("inserted")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (emfile, "Too many open files: /data/journal/x.jsonl"),
        (wrapped_emfile, "Too many open files: /data/journal/x.jsonl"),
        (spawn_emfile, "BrowserType.launch: spawn EMFILE"),
    ],
    ids=["EMFILE", "wrapped", "message"],
)
async def test_running_out_of_file_descriptors_is_waited_out_and_named_not_a_crash(
    error: Callable[[], BaseException],
    said: str,
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
) -> None:
    port = free_port()
    config = make_config(
        SUPERVISOR__MAX_RESTARTS="1",
        SUPERVISOR__ON_STAGE_FAILURE="exit",
        HTTP__LISTEN=f"127.0.0.1:{port}",
        **FAST,
    )
    stage = FileLimitStage(error)
    supervisor = Supervisor(config, [stage, SteadyStage()], pool)
    server = StatusServer(supervisor)
    await server.start()
    running = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: stage.runs > 5, what="retries beyond max_restarts")
        assert not running.done()  # not failed, and the process stays
        loader = supervisor.runtimes["loader"]
        assert loader.state != StageState.FAILED
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 503, body
        assert body["reasons"] == ["stage loader is out of file descriptors: out_of_files"]
        _, full = await get_json(f"http://127.0.0.1:{port}/status")  # the detail is on /status
        (reason,) = full["unhealthy_reasons"]
        assert "out_of_files" in reason and said in reason
        assert full["stages"]["loader"]["reason"] == "out_of_files"
        metrics = await get_text(f"http://127.0.0.1:{port}/metrics")
        assert "dahell_up 0.0" in metrics

        stage.exhausted = False  # the files were closed: it resumes by itself
        await until(lambda: supervisor.healthy()[0], what="healthy again")
        status, body = await get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body["stages"]["loader"] == "running"
        assert loader.ctx.counters[("inserted", "")] > 0
    finally:
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=15)
        await server.close()
    assert code == 0
    assert not events(logs, "stage_failed") and not events(logs, "stage_crashed")
    assert events(logs, "stage_restarted", reason="out_of_files")
    (reached,) = events(logs, "file_limit_reached", stage="loader")  # once, not once a retry
    assert said in reached["error"]
    assert events(logs, "file_limit_recovered", stage="loader")


class DescriptorHog:
    """Opens files until the process has none left and holds them for its first `holds` runs.

    The supervisor handles each failure while no descriptor is free: its restart path must
    need none.
    """

    name = "loader"

    def __init__(self, holds: int) -> None:
        self.holds = holds
        self.runs = 0
        self.held: list[int] = []
        self.working = asyncio.Event()

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        if self.runs <= self.holds:
            while True:
                self.held.append(os.open(os.devnull, os.O_RDONLY))  # raises EMFILE, at last
        self.release()
        self.working.set()
        while not await ctx.sleep(0.05):
            ctx.count("inserted")

    def release(self) -> None:
        while self.held:
            os.close(self.held.pop())


@pytest.fixture
def few_descriptors() -> Iterator[None]:
    """A soft open-file limit just above what the test process holds now (fast to exhaust)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, in_use + 64), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_supervisor_survives_a_real_file_limit_and_the_stage_resumes(
    make_config: MakeConfig,
    pool: asyncpg.Pool,
    logs: list[dict[str, Any]],
    signals_restored: None,
    few_descriptors: None,
) -> None:
    config = make_config(SUPERVISOR__MAX_RESTARTS="1", SUPERVISOR__ON_STAGE_FAILURE="exit", **FAST)
    stage = DescriptorHog(holds=4)
    supervisor = Supervisor(config, [stage, SteadyStage()], pool)
    running = asyncio.create_task(supervisor.run())
    try:
        await asyncio.wait_for(stage.working.wait(), timeout=10)
        assert not running.done()
        await until(lambda: supervisor.healthy()[0], what="healthy again")
    finally:
        stage.release()
        supervisor.request_stop(0, "test over")
        code = await asyncio.wait_for(running, timeout=15)
    assert code == 0 and stage.runs == 5
    assert len(events(logs, "stage_restarted", reason="out_of_files")) == 4
    (reached,) = events(logs, "file_limit_reached", stage="loader")
    assert "Too many open files" in reached["error"]
    assert not events(logs, "stage_failed") and not events(logs, "stage_crashed")
