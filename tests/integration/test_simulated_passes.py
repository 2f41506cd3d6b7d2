"""Passes days apart in seconds: the scraper stamps captures with the simulator's clock.

`dahell demo` needs stock histories spread over days to show sales per day, but runs its passes
seconds apart. The simulator keeps a simulated clock (one day per pass) and moves its catalog
when a new pass starts; the scraper stage takes its capture-time source as an argument, so the
journal carries the simulated times, and the loader reads them as it reads any capture time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dahell.journal import journal_files
from dahell.simulator import Simulator, SimulatorConfig
from dahell.stages.scraper import ScraperStage
from tests.integration.test_scraper import journal_records, scraper_config, scraper_context

pytestmark = pytest.mark.timeout(120)


async def test_three_quick_passes_are_journaled_one_simulated_day_apart(tmp_path: Path) -> None:
    start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    config = SimulatorConfig(
        products=120, seed=29, start_at=start, advance_each_pass=True, max_passes=2
    )
    async with Simulator(config) as sim:
        cfg = scraper_config(sim, tmp_path / "data", SCRAPER__PASS_INTERVAL_S="0")
        ctx = scraper_context(cfg, exit_when_idle=False)
        task = asyncio.create_task(ScraperStage(clock=sim.clock).run(ctx))
        deadline = time.monotonic() + 90
        while ctx.counters[("passes", "")] < 3:
            assert time.monotonic() < deadline and not task.done(), "too few passes in time"
            await asyncio.sleep(0.05)
        ctx.stopping.set()
        await asyncio.wait_for(task, 30)

    records = journal_records(cfg)
    stamps = sorted({datetime.fromisoformat(r["capture_timestamp"]) for r in records})
    days = sorted({(s - start).days for s in stamps})
    assert days[:3] == [0, 1, 2]
    assert all(s - start < timedelta(days=3) for s in stamps)  # never past the last pass
    names = [p.name for p in journal_files(cfg.journal_dir)]
    assert names[:3] == [
        "raw_products_20261120.jsonl",
        "raw_products_20261121.jsonl",
        "raw_products_20261122.jsonl",
    ]
    # Each pass saw the catalog of its own day: stock moved between the first two.
    by_day: dict[int, dict[int, object]] = {}
    for record in records:
        day = (datetime.fromisoformat(record["capture_timestamp"]) - start).days
        by_day.setdefault(day, {})[record["id"]] = record["raw_json"]
    assert by_day[0].keys() == by_day[1].keys()
    assert by_day[0] != by_day[1]
