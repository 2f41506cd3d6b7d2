"""Migrations: found in a wheel install, never silently absent, never silently changed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest
import structlog.testing

from dahell import db
from dahell.daemon import EXIT_DATABASE, run_daemon
from dahell.errors import DatabaseUnavailable, MigrationError

REPO = Path(__file__).resolve().parents[2]
CHECKOUT_LEFTOVERS = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "data",
    "test-artifacts",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)


def copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(REPO / "sql", target)
    return target


async def test_a_changed_migration_is_an_error_naming_the_file(pg_dsn: str, tmp_path: Path) -> None:
    sql = copy_sql(tmp_path)
    await db.apply_migrations(pg_dsn, directory=sql)  # all applied: nothing to do
    changed = sql / "002_vectorizer.sql"
    changed.write_text(changed.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(MigrationError) as err:
        await db.apply_migrations(pg_dsn, directory=sql)
    assert "002_vectorizer.sql" in str(err.value) and "changed" in str(err.value)
    assert isinstance(err.value, DatabaseUnavailable)  # start-up stops: exit 3


async def test_line_endings_do_not_change_a_checksum(pg_dsn: str, tmp_path: Path) -> None:
    sql = copy_sql(tmp_path)
    first = sql / "001_schema.sql"
    first.write_bytes(first.read_bytes().replace(b"\n", b"\r\n"))  # a Windows checkout
    assert await db.apply_migrations(pg_dsn, directory=sql) == []


async def test_no_migration_found_fails_loudly(pg_dsn: str, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(MigrationError, match="no migrations"):
        await db.apply_migrations(pg_dsn, directory=empty)
    with pytest.raises(MigrationError, match="no migrations"):
        await db.apply_migrations(pg_dsn, directory=tmp_path / "absent")


async def test_pending_migrations_are_applied_once_and_recorded(
    pg_server: str, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM dahell_migrations")
    finally:
        await conn.close()
    found = {m.version: m for m in db.discover_migrations()}
    assert {r["version"] for r in rows} == set(found)
    assert all(found[r["version"]].checksum == r["checksum"] for r in rows)
    assert await db.apply_migrations(pg_dsn) == []


@pytest.mark.slow
def test_the_wheel_ships_every_migration_and_finds_them(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds, and a
    # later wheel from the checkout would ship modules deleted since (seen after a refactor).
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*CHECKOUT_LEFTOVERS))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, str(source), "-w", str(out)], check=True, capture_output=True, timeout=300
    )
    (wheel,) = out.glob("dahell-*.whl")
    sources = sorted(p.name for p in (REPO / "sql").glob("*.sql"))
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(n.split("/")[-1] for n in zf.namelist() if n.startswith("dahell/sql/"))
        zf.extractall(tmp_path / "site")
    assert shipped == sources
    # Installed like a wheel, away from the checkout: the migrations come from the package.
    code = "from dahell import db; print(db.SQL_DIR); print(len(db.discover_migrations()))"
    found = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, 'site'); {code}"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert found == [str(tmp_path / "site" / "dahell" / "sql"), str(len(sources))]


async def test_the_daemon_stops_at_start_up_naming_the_changed_file(
    pg_dsn: str,
    make_config,  # type: ignore[no-untyped-def]
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE dahell_migrations SET checksum = 'edited' WHERE version = 2")
    finally:
        await conn.close()
    with structlog.testing.capture_logs() as logs:
        code = await run_daemon(make_config(pg_dsn), [])
    assert code == EXIT_DATABASE
    (failed,) = [e for e in logs if e["event"] == "migration_failed"]
    assert "002_vectorizer.sql" in failed["error"]
