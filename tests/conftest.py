"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test.

`pg_dsn` gives each test its own database cloned from a migrated template (a few ms), so tests
never see each other's rows and never need cleaning up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dahell import config as config_mod
from dahell import db

TEMPLATE_DB = "dahell_template"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The embedded server for the whole test session; yields its admin DSN."""
    root = Path(tempfile.mkdtemp(prefix="dahell-test-pg-"))
    os.chmod(root, 0o755)
    server = db.start_embedded(root)
    dsn = server.dsn

    async def make_template() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await conn.close()
        await db.apply_migrations(with_database(dsn, TEMPLATE_DB))

    asyncio.run(make_template())
    yield dsn
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def pg_dsn(pg_server: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(pg_server)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await conn.close()
    yield with_database(pg_server, name)
    conn = await asyncpg.connect(pg_server)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build a Config for a test: data under tmp_path, plus `DAHELL_...`-style overrides."""

    def build(dsn: str = "", **overrides: str) -> config_mod.Config:
        env = {"DAHELL_PATHS__DATA_DIR": str(tmp_path / "data"), "DAHELL_DATABASE__DSN": dsn}
        env.update(
            {k if k.startswith("DAHELL_") else f"DAHELL_{k}": v for k, v in overrides.items()}
        )
        return config_mod.load(path=None, env=env)

    return build


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4, init=db._init_connection)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def export_extra() -> None:
    """Tests of the model export and its parity need the `export` extra: fail, never skip.

    `./test.sh` installs it; a skip here would hide the tests that prove the vectorizer right.
    """
    import importlib.util

    missing = [
        m for m in ("torch", "transformers", "optimum") if importlib.util.find_spec(m) is None
    ]
    if missing:
        pytest.fail(
            f"the [export] extra is not installed ({', '.join(missing)}): ./test.sh installs it",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _keep_logging_config() -> Iterator[None]:
    """Each test starts with the logging set-up the previous one found.

    A test that runs a command in-process (`cli.main`) calls `log.configure`, which sets a level
    filter that `structlog.testing.capture_logs` does not lift: later tests then capture nothing.
    """
    import logging

    import structlog

    saved = structlog.get_config()
    saved["processors"] = list(saved["processors"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test fails: a skip (a missing extra, a missing browser) would let the suite
    pass while proving less, and nobody reads the `s` among the dots.

    Except tests/container, run only on request, which skips where no root podman can run.
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and not _container_test(report.nodeid):
        report.outcome = "failed"
        report.longrepr = f"skipped, and a test must run: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A module that skips itself as a whole (`importorskip`, `skip(allow_module_level=True)`)
    fails too, for the same reason."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not _container_test(report.nodeid):
        report.outcome = "failed"
        report.longrepr = f"skipped, and a test must run: {_skip_reason(report.longrepr)}"


def _skip_reason(longrepr: object) -> str:
    """pytest keeps a skip as (file, line, "Skipped: reason")."""
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def _container_test(nodeid: str) -> bool:
    return nodeid.startswith("tests/container/")
