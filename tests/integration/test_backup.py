"""Backups against the real embedded PostgreSQL: dumps restore-readable, pruned, secret-free."""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from dahell import backup, db
from dahell.config import Config
from dahell.errors import DahellError

PG_RESTORE = backup.bundled_pg_dump().with_name("pg_restore")


def restore_list(dump: Path) -> str:
    result = subprocess.run(
        [str(PG_RESTORE), "--list", str(dump)], capture_output=True, text=True, check=True
    )
    return result.stdout


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder the embedded server's `pgserver` user can enter (tmp_path is 0700)."""
    with tempfile.TemporaryDirectory(prefix="dahell-test-backup-") as root:
        os.chmod(root, 0o755)
        yield Path(root) / "data"


async def test_external_dsn_dump_is_readable_by_pg_restore(
    pg_dsn: str, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO suppliers (supplier_id, name) VALUES (7, 'Tienda')")
    finally:
        await conn.close()
    out = tmp_path / "dumps"
    dump = await backup.run_backup(make_config(pg_dsn), out, keep=3)
    assert dump.parent == out and backup.DUMP_NAME.match(dump.name)
    listing = restore_list(dump)
    assert "TABLE public products" in listing
    assert "TABLE DATA public suppliers" in listing
    assert [p.name for p in out.iterdir()] == [dump.name]  # no partial file left


async def test_embedded_database_is_dumped_and_old_dumps_pruned(
    make_config: Callable[..., Config], data_dir: Path
) -> None:
    config = make_config(PATHS__DATA_DIR=str(data_dir))
    database = await db.connect(config)  # starts the embedded server and migrates it
    await database.close()
    made = [await backup.run_backup(config, None, keep=2) for _ in range(3)]
    out = data_dir / "backups"
    assert all(p.parent == out for p in made)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in made[1:])
    assert "TABLE public product_embeddings" in restore_list(made[-1])


def test_the_password_goes_to_the_environment_not_the_command_line(tmp_path: Path) -> None:
    for dsn in (
        "postgresql://app:s3cr%40t@db.example:5432/dahell?sslmode=require",
        "postgresql://app@db.example/dahell?password=s3cr%40t",
        "host=db.example user=app password='s3cr@t' dbname=dahell",
    ):
        argv, env = backup.pg_dump_command(Path("pg_dump"), dsn, tmp_path / "x.dump")
        assert not any("s3cr" in a for a in argv), argv
        assert env["PGPASSWORD"] == "s3cr@t"
        assert "db.example" in argv[-1]


async def test_a_failed_dump_raises_a_secret_free_error_and_leaves_no_file(
    pg_server: str, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    dsn = pg_server.replace("postgres:@", "postgres:hunter22@").replace(
        "/postgres?", "/no_such_db?"
    )
    out = tmp_path / "dumps"
    with pytest.raises(DahellError, match="no_such_db") as info:
        await backup.run_backup(make_config(dsn), out, keep=1)
    assert "hunter22" not in str(info.value)
    assert list(out.iterdir()) == []


async def test_cli_prints_path_and_size(
    pg_dsn: str,
    make_config: Callable[..., Config],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    backup.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "b"), "--keep", "1"])
    assert await backup.main(make_config(pg_dsn), args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]  # after the JSON log lines
    path, size = last.split("  ")
    out = tmp_path / "b"
    assert [str(p) for p in out.iterdir()] == [path]
    assert size.endswith("KiB")
    with pytest.raises(SystemExit):
        parser.parse_args(["--keep", "0"])
