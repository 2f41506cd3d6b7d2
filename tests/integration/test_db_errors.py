"""Which errors mean "PostgreSQL cannot be reached now" (waited out) and which are faults.

Each error is produced for real against the embedded server, not constructed: the supervisor's
rule depends on where asyncpg raises what.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import asyncpg
import pytest

from dahell import db
from dahell.errors import DatabaseUnavailable, MigrationError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raised(coro: object) -> BaseException:
    try:
        await coro  # type: ignore[misc]
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


async def test_a_refused_connection_is_the_database_being_unavailable() -> None:
    dsn = f"postgresql://u@127.0.0.1:{closed_port()}/x"
    exc = await raised(asyncpg.connect(dsn, timeout=2))
    assert isinstance(exc, OSError)
    assert db.is_unavailable(exc)
    assert db.is_unavailable(DatabaseUnavailable("embedded server did not start"))


async def test_a_lost_connection_is_the_database_being_unavailable(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    killer = await asyncpg.connect(pg_dsn)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # Let the termination reach the client first: used mid-teardown, asyncpg may answer
        # "another operation is in progress" instead (a race of the test, not the rule).
        for _ in range(1500):  # polled for up to 30 s: a loaded machine only waits longer
            if conn.is_closed():
                break
            await asyncio.sleep(0.02)
        exc = await raised(conn.fetchval("SELECT 1"))
    finally:
        await killer.close()
        conn.terminate()
    assert db.is_unavailable(exc), repr(exc)


async def test_a_connection_used_at_any_moment_of_its_termination_is_unavailable(
    pg_dsn: str,
) -> None:
    # The daemon's pool can hand out a connection while the server's shutdown message is still
    # being read: asyncpg then says "cannot switch to state 15; another operation (2) is in
    # progress" (2: consuming an error that came outside any operation), with no loss in the
    # chain. Whatever moment the query meets, the answer must be "wait", not a crash.
    killer = await asyncpg.connect(pg_dsn)
    seen: set[str] = set()
    try:
        for attempt in range(24):
            conn = await asyncpg.connect(pg_dsn)
            try:
                await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                for _ in range(attempt % 6):
                    await asyncio.sleep(0)
                exc = await raised(conn.fetchval("SELECT 1"))
            finally:
                conn.terminate()
            seen.add(type(exc).__name__)
            assert db.is_unavailable(exc), repr(exc)
    finally:
        await killer.close()
    assert seen


@pytest.mark.parametrize(
    "message",
    [
        "cannot switch to state 15; another operation (2) is in progress",
        'cannot switch to state 15; protocol is in the "failed" state',
        "not connected",
    ],
)
def test_asyncpg_protocol_states_of_a_dying_connection_are_unavailable(message: str) -> None:
    assert db.is_unavailable(asyncpg.InternalClientError(message))


def test_a_protocol_clash_of_two_operations_of_ours_is_not_unavailable() -> None:
    # 12: bind-execute. Two of our operations on one connection is a bug, not the database.
    clash = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (12) is in progress"
    )
    assert not db.is_unavailable(clash)


async def test_a_pool_acquire_timeout_is_unavailable_a_command_timeout_is_not(
    pg_dsn: str,
) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire():
            waited = await raised(pool.acquire(timeout=0.2))
        assert isinstance(waited, TimeoutError) and db.is_unavailable(waited)
        slow = await raised(pool.fetchval("SELECT pg_sleep(5)", timeout=0.2))
        assert isinstance(slow, TimeoutError) and not db.is_unavailable(slow)
    finally:
        await pool.close()


async def test_the_pools_connect_turns_connect_failures_into_database_unavailable() -> None:
    dsn = f"postgresql://u@127.0.0.1:{closed_port()}/x"
    exc = await raised(db.connect_or_unavailable(dsn, timeout=2))
    assert isinstance(exc, DatabaseUnavailable) and db.is_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device", "/data/journal/x.jsonl"),
        PermissionError(errno.EACCES, "Permission denied", "/data/journal"),
        TimeoutError("a command timeout"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/models/x"),
        ConnectionResetError(errno.ECONNRESET, "reset by a peer that is not PostgreSQL"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.InterfaceError("cannot perform operation: another operation"),
        RuntimeError("boom"),
        MigrationError("migration 002_vectorizer.sql changed after it was applied"),
    ],
)
def test_other_errors_are_not_the_database_being_unavailable(exc: BaseException) -> None:
    assert not db.is_unavailable(exc)


async def test_errors_raised_outside_asyncpg_are_judged_by_their_type() -> None:
    async def reset() -> None:
        await asyncio.sleep(0)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by an image CDN")

    assert not db.is_unavailable(await raised(reset()))


def test_an_error_cleaning_up_after_a_lost_connection_is_unavailable_too() -> None:
    def cleanup_after_loss() -> None:
        try:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        except asyncpg.PostgresConnectionError:
            # the rollback on the dead connection, as the loader's transaction exit does
            raise asyncpg.InterfaceError(  # noqa: B904 - the implicit context is the point
                "cannot perform operation: another operation is in progress"
            )

    try:
        cleanup_after_loss()
    except asyncpg.InterfaceError as exc:
        chained = exc
    assert chained.__context__ is not None
    assert db.is_unavailable(chained)
    alone = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    assert not db.is_unavailable(alone)  # a bug of ours, not the database
