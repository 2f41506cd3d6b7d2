"""Scraper throughput against the simulator: a full api-mode pass, and ui mode on a subset.

    python tests/benchmarks/bench_scraper.py                       # 25,000 products, the target
    python tests/benchmarks/bench_scraper.py --products 2000 --ui-products 500   # quick look

Defaults follow the issue: page size 100, 100 ms simulated API latency, 0.5 s between pages.
Target: the full api pass in under 3 minutes. Not collected by pytest (no test_ functions).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from dahell import config as config_mod
from dahell import log as dahell_log
from dahell.simulator import Simulator, SimulatorConfig
from dahell.stages.base import Context
from dahell.stages.scraper import ScraperStage

TARGET_S = 180.0


@dataclass
class Result:
    mode: str
    products: int
    wall_s: float
    pages: int

    @property
    def rate(self) -> float:
        return self.products / self.wall_s if self.wall_s else 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=25_000, help="catalog size (api pass)")
    parser.add_argument("--ui-products", type=int, default=1_000, help="catalog size (ui pass)")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per API request")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between pages")
    return parser.parse_args()


def make_config(sim: Simulator, data_dir: Path, mode: str, args: argparse.Namespace) -> Context:
    env = {
        "DAHELL_PATHS__DATA_DIR": str(data_dir),
        "DAHELL_SCRAPER__APP_URL": sim.app_url,
        "DAHELL_SCRAPER__API_URL": sim.api_url,
        "DAHELL_SCRAPER__EMAIL": sim.config.email,
        "DAHELL_SCRAPER__PASSWORD": sim.config.password,
        "DAHELL_SCRAPER__MODE": mode,
        "DAHELL_SCRAPER__PAGE_SIZE": str(args.page_size),
        "DAHELL_SCRAPER__REQUEST_INTERVAL_S": str(args.interval),
    }
    cfg = config_mod.load(path=None, env=env)
    return Context(
        name="scraper",
        config_getter=lambda: cfg,
        pool=None,  # type: ignore[arg-type]
        log=structlog.get_logger().bind(stage="scraper"),
        inbox=None,
        outboxes={"loader": asyncio.Queue(maxsize=64)},
        stopping=asyncio.Event(),
        exit_when_idle=True,
    )


async def drain(queue: asyncio.Queue[object]) -> None:
    """Stand in for the loader: take batches as fast as they come."""
    while True:
        await queue.get()


async def one_pass(mode: str, products: int, args: argparse.Namespace) -> Result:
    sim_config = SimulatorConfig(
        products=products, latency_s=args.latency, ui_page_size=args.page_size
    )
    async with Simulator(sim_config) as sim:
        with tempfile.TemporaryDirectory(prefix="dahell-bench-") as folder:
            ctx = make_config(sim, Path(folder), mode, args)
            consumer = asyncio.create_task(drain(ctx.outboxes["loader"]))  # type: ignore[arg-type]
            started = time.monotonic()
            await ScraperStage().run(ctx)
            wall = time.monotonic() - started
            consumer.cancel()
    return Result(mode, ctx.counters[("products", "")], wall, ctx.counters[("pages", "")])


def report(results: list[Result]) -> None:
    print(f"{'mode':<6}{'products':>10}{'pages':>8}{'wall s':>10}{'products/s':>12}")
    for r in results:
        print(f"{r.mode:<6}{r.products:>10}{r.pages:>8}{r.wall_s:>10.1f}{r.rate:>12.1f}")
    api, ui = results
    if ui.rate:
        print(f"api/ui throughput ratio: {api.rate / ui.rate:.2f}x")
    verdict = "meets" if api.wall_s < TARGET_S else "MISSES"
    print(f"full api pass: {api.wall_s:.1f} s, {verdict} the {TARGET_S:.0f} s target")


async def main() -> None:
    args = parse_args()
    dahell_log.configure("info", "console")
    results = [
        await one_pass("api", args.products, args),
        await one_pass("ui", args.ui_products, args),
    ]
    report(results)


if __name__ == "__main__":
    asyncio.run(main())
