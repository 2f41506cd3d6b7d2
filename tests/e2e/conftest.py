"""Helpers for the daemon's end-to-end tests: `python -m dahell run` as a real subprocess.

`Daemon` wraps one process: it reads the JSON log lines from stdout (and stderr) as they come,
waits for events, talks to the HTTP server on a free port, sends signals, and is always killed
in fixture teardown. Embedded PostgreSQL servers started under a test's data folder are stopped
in teardown too (a daemon killed with SIGKILL leaves its server running, by design).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil
import pytest

from tests.factories import catalog_lines

REPO = Path(__file__).resolve().parents[2]
JOURNAL_NAME = "raw_products_20251223.jsonl"
# Lines every journal fixture ends with: each must end as a reject with a reason.
BAD_LINES = ["this is not json", '{"id": "not-a-number", "name": 12}']


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_env(data_dir: Path, dsn: str = "", port: int | None = None, **overrides: str) -> dict:
    """The environment for a daemon: no inherited DAHELL_*, data under `data_dir`.

    `overrides` are `SECTION__KEY=value` (without the DAHELL_ prefix).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAHELL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(
        DAHELL_PATHS__DATA_DIR=str(data_dir),
        DAHELL_DATABASE__DSN=dsn,
        DAHELL_LOG__LEVEL="info",
        DAHELL_LOG__FORMAT="json",
    )
    if port is None:
        env["DAHELL_HTTP__ENABLED"] = "false"
    else:
        env["DAHELL_HTTP__LISTEN"] = f"127.0.0.1:{port}"
    env.update({f"DAHELL_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


class Daemon:
    """One `python -m dahell ...` process, its log lines and its HTTP server."""

    def __init__(self, proc: asyncio.subprocess.Process, env: dict[str, str]) -> None:
        self.proc = proc
        self.env = env
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.ensure_future(self._read(proc.stdout, self.stdout, parse=True)),
            asyncio.ensure_future(self._read(proc.stderr, self.stderr, parse=False)),
        ]
        listen = env.get("DAHELL_HTTP__LISTEN")
        self.base = f"http://{listen}" if env.get("DAHELL_HTTP__ENABLED") != "false" else ""
        self.token = env.get("DAHELL_HTTP__TOKEN", "")

    async def _read(
        self, stream: asyncio.StreamReader | None, into: list[str], *, parse: bool
    ) -> None:
        assert stream is not None
        while True:
            raw = await stream.readline()
            if not raw:
                self._changed.set()
                return
            line = raw.decode(errors="replace").rstrip("\n")
            into.append(line)
            if parse and line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    event = orjson.loads(line)
                    if isinstance(event, dict):
                        self.events.append(event)
            self._changed.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def output(self, tail: int = 6000) -> str:
        text = "\n".join(self.stdout) + "\n--- stderr ---\n" + "\n".join(self.stderr)
        return text[-tail:]

    def named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self,
        event: str,
        *,
        count: int = 1,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until `count` log events named `event` (and matching `where`) were logged."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.named(event) if where is None or where(e)]
            if len(found) >= count:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (not self.running and all(r.done() for r in self._readers)):
                raise AssertionError(
                    f"no {count} x {event!r} within {timeout}s (running={self.running});"
                    f" output:\n{self.output()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))

    async def get(self, path: str, *, token: str | None = None) -> tuple[int, Any]:
        """GET `path`; returns (status, parsed JSON or text). `token=None`: the daemon's token."""
        assert self.base, "the daemon runs without HTTP"
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(self.base + path, headers=headers) as resp,
        ):
            text = await resp.text()
            if resp.content_type == "application/json":
                return resp.status, orjson.loads(text)
            return resp.status, text

    async def wait_http(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until /healthz answers (200 or 503); return its body."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                status, body = await self.get("/healthz", token="")
                if status in (200, 503):
                    return dict(body)
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"/healthz never answered; output:\n{self.output()}")
            await asyncio.sleep(0.1)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"the daemon did not exit within {timeout}s; output:\n{self.output()}"
            ) from None
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


StartDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """`await start_daemon(env, "run", "--stages", "loader", ...)`; every process is killed."""
    started: list[Daemon] = []

    async def start(env: dict[str, str], *args: str) -> Daemon:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dahell",
            *args,
            cwd=tmp_path,  # no ./dahell.toml here: the environment and --config are the config
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        daemon = Daemon(proc, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.kill()


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the embedded server under `<data_dir>/pg`, if one runs."""
    try:
        first = (data_dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a parent that never reaps it does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_postmaster(data_dir: Path, timeout: float = 10.0) -> None:
    """Stop an embedded server left running under `data_dir` (fast shutdown, then kill)."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data folder the embedded server (run as the `pgserver` user) can use; cleaned up."""
    root = Path(tempfile.mkdtemp(prefix="dahell-e2e-"))
    os.chmod(root, 0o755)
    data = root / "data"
    try:
        yield data
    finally:
        stop_postmaster(data)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def journal_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """`journal_cache(n)`: a file of `n` catalog lines plus BAD_LINES, generated once per n."""
    folder = tmp_path_factory.mktemp("journals")
    made: dict[int, Path] = {}

    def get(n: int) -> Path:
        if n not in made:
            path = folder / f"lines_{n}.jsonl"
            lines = catalog_lines(n) + BAD_LINES
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            made[n] = path
        return made[n]

    return get


def place_journal(source: Path, data_dir: Path) -> Path:
    """Copy a journal file into `<data_dir>/journal/` under the scraper's file name."""
    journal = data_dir / "journal"
    journal.mkdir(parents=True, exist_ok=True)
    target = journal / JOURNAL_NAME
    shutil.copyfile(source, target)
    return target


def line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


async def fetch_one(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


async def fetch_value(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def accounting(dsn: str, journal: Path) -> dict[str, int]:
    """How the lines of `journal` ended: load totals, rejects and the file's checkpoint."""
    conn = await asyncpg.connect(dsn)
    try:
        totals = {r["outcome"]: int(r["lines"]) for r in await conn.fetch("TABLE load_totals")}
        rejects = int(await conn.fetchval("SELECT count(*) FROM rejects"))
        cp = await conn.fetchrow(
            "SELECT byte_offset, line_no, lines_loaded, lines_rejected FROM load_checkpoints"
            " WHERE source = $1",
            str(journal.resolve()),
        )
    finally:
        await conn.close()
    return {
        "total": sum(totals.values()),
        "rejected": totals.get("rejected", 0),
        "rejects_rows": rejects,
        "offset": int(cp["byte_offset"]) if cp else 0,
        "lines_done": int(cp["line_no"]) - 1 if cp else 0,
        "cp_loaded": int(cp["lines_loaded"]) if cp else 0,
        "cp_rejected": int(cp["lines_rejected"]) if cp else 0,
    }
