"""The scraper stage with real Chromium against the Dropi simulator.

Helpers here are meant for reuse by the daemon-level tests: the `simulator` fixture,
`scraper_config`, `scraper_context`, `journal_records` and `kill_chromium`.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import structlog
from structlog.testing import capture_logs

from dahell import config as config_mod
from dahell.errors import CredentialsError
from dahell.journal import journal_files
from dahell.simulator import Simulator, SimulatorConfig
from dahell.stages.base import Context, JournalBatch
from dahell.stages.scraper import ScraperStage

PASSWORD = "s3cret-Pass"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """A running simulator: 230 products (the last page of 50 is short), seed fixed."""
    async with Simulator(SimulatorConfig(products=230, seed=21, password=PASSWORD)) as sim:
        yield sim


def scraper_config(sim: Simulator, data_dir: Path, **overrides: str) -> config_mod.Config:
    """A Config pointing the scraper at `sim`; `overrides` are `SECTION__KEY` strings."""
    env = {
        "DAHELL_PATHS__DATA_DIR": str(data_dir),
        "DAHELL_SCRAPER__APP_URL": sim.app_url,
        "DAHELL_SCRAPER__API_URL": sim.api_url,
        "DAHELL_SCRAPER__EMAIL": sim.config.email,
        "DAHELL_SCRAPER__PASSWORD": sim.config.password,
        "DAHELL_SCRAPER__PAGE_SIZE": "50",
        "DAHELL_SCRAPER__REQUEST_INTERVAL_S": "0",
        "DAHELL_SCRAPER__PASS_INTERVAL_S": "0",
        "DAHELL_SCRAPER__REQUEST_TIMEOUT_S": "20",
        "DAHELL_JOURNAL__FSYNC": "false",
    }
    env.update({f"DAHELL_{key}": value for key, value in overrides.items()})
    return config_mod.load(path=None, env=env)


def scraper_context(cfg: config_mod.Config, exit_when_idle: bool = True) -> Context:
    return Context(
        name="scraper",
        config_getter=lambda: cfg,
        pool=None,  # type: ignore[arg-type]  # the scraper never touches the database
        log=structlog.get_logger().bind(stage="scraper"),
        inbox=None,
        outboxes={"loader": asyncio.Queue(maxsize=10_000)},
        stopping=asyncio.Event(),
        exit_when_idle=exit_when_idle,
    )


def journal_records(cfg: config_mod.Config) -> list[dict[str, Any]]:
    records = []
    for path in journal_files(cfg.journal_dir):
        records += [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    return records


def journal_bytes(cfg: config_mod.Config) -> bytes:
    return b"".join(path.read_bytes() for path in journal_files(cfg.journal_dir))


def queued_batches(ctx: Context) -> list[JournalBatch]:
    queue = ctx.outboxes["loader"]
    out = []
    while not queue.empty():
        message = queue.get_nowait()
        assert isinstance(message, JournalBatch)
        out.append(message)
    return out


def kill_chromium() -> int:
    """SIGKILL the top Chromium process(es) this test process started; return how many."""
    killed = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name() and "chrom" not in proc.parent().name():
                proc.kill()
                killed += 1
        except psutil.NoSuchProcess:
            continue
    return killed


async def until_pages(ctx: Context, pages: int, timeout: float = 60) -> None:
    """Wait until the stage has captured `pages` pages (polling its counters)."""
    deadline = time.monotonic() + timeout
    while ctx.counters[("pages", "")] < pages:
        assert time.monotonic() < deadline, "the scraper captured too few pages in time"
        await asyncio.sleep(0.02)


def assert_exactly_the_catalog(sim: Simulator, records: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(p["id"] for p in sim.catalog)
    assert len(ids) == len(set(ids)), "a product was captured twice"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_full_pass_journals_every_product_once_then_enqueues(
    simulator: Simulator, tmp_path: Path
) -> None:
    cfg = scraper_config(simulator, tmp_path)
    ctx = scraper_context(cfg)
    with capture_logs() as logs:
        await ScraperStage().run(ctx)
    records = journal_records(cfg)
    assert_exactly_the_catalog(simulator, records)
    assert [r["page_start"] for r in records[::50]] == [0, 50, 100, 150, 200]
    assert records[0]["raw_json"] == simulator.catalog[0]
    assert records[0]["capture_timestamp"].endswith("+00:00")
    assert len({r["pass_id"] for r in records}) == 1
    batches = queued_batches(ctx)
    assert [line for b in batches for line in b.lines] == journal_bytes(cfg).splitlines()
    assert all(b.path.read_bytes()[b.start : b.end].count(b"\n") == len(b.lines) for b in batches)
    [finished] = events(logs, "pass_finished")
    assert (finished["pages"], finished["products"], finished["new_products"]) == (5, 230, 230)
    assert finished["errors"] == 0 and ctx.idle
    assert ctx.counters[("products", "")] == 230 and ctx.counters[("pages", "")] == 5
    state = tmp_path / "scraper" / "storage_state.json"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert PASSWORD not in repr(logs) and PASSWORD.encode() not in journal_bytes(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("refresh_early", [False, True], ids=["on_401", "before_expiry"])
async def test_token_expiring_mid_pass_logs_in_again_without_gap_or_duplicate(
    simulator: Simulator, tmp_path: Path, refresh_early: bool
) -> None:
    # Early refresh: the scraper logs in again before `exp`. On 401: the API's clock runs ahead,
    # so the token expires there while the scraper still believes it valid.
    simulator.faults.token_lifetime_s = 3 if refresh_early else 4
    simulator.faults.clock_skew_s = 0 if refresh_early else 2.5
    cfg = scraper_config(
        simulator,
        tmp_path,
        SCRAPER__PAGE_SIZE="20",
        SCRAPER__REQUEST_INTERVAL_S="0.3",  # 12 pages: 3.3 s or more, the token lasts 0.5-3 s
        SCRAPER__RELOGIN_BEFORE_EXPIRY_S="600" if refresh_early else "0",
    )
    with capture_logs() as logs:
        await ScraperStage().run(scraper_context(cfg))
    records = journal_records(cfg)
    assert_exactly_the_catalog(simulator, records)
    assert sorted({r["page_start"] for r in records}) == list(range(0, 230, 20))
    assert simulator.stats.logins >= 2
    refreshed = {e["reason"] for e in events(logs, "token_refreshed")}
    assert refreshed == ({"expiring"} if refresh_early else {"rejected"})
    assert (simulator.stats.rejected_401 == 0) == refresh_early
    assert PASSWORD not in repr(logs)


@pytest.mark.slow
async def test_chromium_killed_mid_pass_resumes_at_the_same_page(
    simulator: Simulator, tmp_path: Path
) -> None:
    cfg = scraper_config(
        simulator, tmp_path, SCRAPER__PAGE_SIZE="20", SCRAPER__REQUEST_INTERVAL_S="0.25"
    )
    with capture_logs() as logs:
        ctx = scraper_context(cfg)
        task = asyncio.create_task(ScraperStage().run(ctx))
        await until_pages(ctx, 3)
        assert kill_chromium() >= 1
        await asyncio.wait_for(task, timeout=90)
    assert_exactly_the_catalog(simulator, journal_records(cfg))
    [restarted] = events(logs, "browser_restarted")
    assert restarted["reason"] in ("crash", "disconnected")
    assert ctx.counters[("browser_restarts", restarted["reason"])] == 1


@pytest.mark.slow
async def test_stopped_stage_resumes_from_progress_and_reuses_the_session(
    simulator: Simulator, tmp_path: Path
) -> None:
    cfg = scraper_config(
        simulator, tmp_path, SCRAPER__PAGE_SIZE="20", SCRAPER__REQUEST_INTERVAL_S="0.1"
    )
    first = scraper_context(cfg)
    task = asyncio.create_task(ScraperStage().run(first))
    await until_pages(first, 4)
    first.stopping.set()
    await asyncio.wait_for(task, timeout=30)
    assert not first.idle
    progress = orjson.loads((tmp_path / "scraper" / "progress.json").read_bytes())
    assert progress["next_start"] >= 80 and not progress["finished_at"]
    # A new stage object, as after kill -9: only the files remain.
    with capture_logs() as logs:
        await ScraperStage().run(scraper_context(cfg))
    assert_exactly_the_catalog(simulator, journal_records(cfg))
    assert simulator.stats.logins == 1 and events(logs, "session_reused")
    [finished] = events(logs, "pass_finished")
    assert finished["products"] == 230 and finished["new_products"] == 230


@pytest.mark.slow
async def test_429_waits_retry_after_then_retries_the_same_page(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.faults.rate_limit_every, simulator.faults.retry_after_s = 3, 1.5
    cfg = scraper_config(simulator, tmp_path)
    started = time.monotonic()
    with capture_logs() as logs:
        await ScraperStage().run(scraper_context(cfg))
    elapsed = time.monotonic() - started
    assert_exactly_the_catalog(simulator, journal_records(cfg))
    limited = events(logs, "rate_limited")
    assert len(limited) == simulator.stats.rejected_429 >= 2
    assert all(e["retry_after_s"] == 1.5 for e in limited)
    assert elapsed >= 1.5 * len(limited)


@pytest.mark.slow
async def test_is_success_false_pages_are_retried_across_browser_restarts(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.faults.is_success_false_every = 2
    cfg = scraper_config(simulator, tmp_path, SCRAPER__RESTART_BROWSER_EVERY_PAGES="3")
    ctx = scraper_context(cfg)
    await ScraperStage().run(ctx)
    assert_exactly_the_catalog(simulator, journal_records(cfg))
    assert simulator.stats.success_false >= 2
    assert not any(outcome == "page_errors" for outcome, _ in ctx.counters)
    assert ctx.counters[("browser_restarts", "page_budget")] >= 2
    assert simulator.stats.logins == 1  # the relaunched browser reuses storage_state


async def test_a_page_that_keeps_failing_is_counted_and_skipped(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.faults.is_success_false_every = 1
    cfg = scraper_config(simulator, tmp_path, SCRAPER__MAX_PAGE_RETRIES="1")
    ctx = scraper_context(cfg)
    with capture_logs() as logs:
        task = asyncio.create_task(ScraperStage().run(ctx))
        while not events(logs, "page_failed"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        simulator.faults.is_success_false_every = 0
        await asyncio.wait_for(task, timeout=60)
    ids = {r["id"] for r in journal_records(cfg)}
    assert ids == {p["id"] for p in simulator.catalog[50:]}
    assert ctx.counters[("page_errors", "is_success_false")] == 1
    [finished] = events(logs, "pass_finished")
    assert finished["errors"] == 1 and finished["products"] == 180


async def test_wrong_password_parks_with_wrong_credentials(
    simulator: Simulator, tmp_path: Path
) -> None:
    wrong = "not-the-Pass-42"
    cfg = scraper_config(simulator, tmp_path, SCRAPER__PASSWORD=wrong)
    with capture_logs() as logs, pytest.raises(CredentialsError) as info:
        await ScraperStage().run(scraper_context(cfg))
    assert info.value.reason == "wrong_credentials"
    assert simulator.stats.login_failures == 2
    assert wrong not in str(info.value) and wrong not in repr(logs)
    assert not journal_records(cfg)


async def test_two_factor_account_parks_with_two_factor_required(
    simulator: Simulator, tmp_path: Path
) -> None:
    cfg = scraper_config(simulator, tmp_path, SCRAPER__EMAIL=simulator.config.two_factor_email)
    with pytest.raises(CredentialsError) as info:
        await ScraperStage().run(scraper_context(cfg))
    assert info.value.reason == "two_factor_required"
    assert PASSWORD not in str(info.value)


async def test_missing_credentials_park_without_a_browser(
    simulator: Simulator, tmp_path: Path
) -> None:
    cfg = scraper_config(simulator, tmp_path, SCRAPER__PASSWORD="")
    with pytest.raises(CredentialsError) as info:
        await ScraperStage().run(scraper_context(cfg))
    assert info.value.reason == "missing_credentials"
    assert simulator.stats.logins == simulator.stats.login_failures == 0


@pytest.mark.slow
async def test_ui_mode_captures_the_same_products(simulator: Simulator, tmp_path: Path) -> None:
    cfg = scraper_config(simulator, tmp_path, SCRAPER__MODE="ui")
    with capture_logs() as logs:
        await ScraperStage().run(scraper_context(cfg))
    records = journal_records(cfg)
    assert_exactly_the_catalog(simulator, records)
    assert [r["id"] for r in records] == [p["id"] for p in simulator.catalog]
    assert events(logs, "pass_finished")[0]["products"] == 230
