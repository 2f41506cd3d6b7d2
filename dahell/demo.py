"""`python -m dahell demo`: the whole pipeline against a local Dropi simulator, in one command.

Starts the simulator (three 127.0.0.1 origins), the embedded database under
`<data_dir>/demo`, and the daemon with all three stages and the tiny untrained SigLIP model;
shows progress; ends with a summary and a look-alike example; then serves the status page until
Ctrl-C (or exits at once with `--no-wait`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from dahell import db
from dahell.config import Config
from dahell.http import StatusServer
from dahell.similar import SimilarError, find_similar, render_table
from dahell.simulator import Simulator, SimulatorConfig
from dahell.stages.base import Stage, StageState
from dahell.stages.loader import LoaderStage
from dahell.stages.scraper import ScraperStage
from dahell.stages.vectorizer import VectorizerStage
from dahell.status_command import gather_counts
from dahell.supervisor import Supervisor

TINY_MODEL = Path(__file__).resolve().parent.parent / "models" / "tiny-siglip"
PROGRESS_EVERY_S = 2.0
DEMO_TIMEOUT_S = 900.0


def demo_config(config: Config, sim: Simulator) -> Config:
    """The user's config, pointed at the simulator, the tiny model and a separate data folder."""
    cdn = urlsplit(sim.cdn_url)

    def update(name: str, **values: Any) -> Any:
        return getattr(config, name).model_copy(update=values)

    return config.model_copy(
        update={
            "paths": update("paths", data_dir=str(Path(config.paths.data_dir) / "demo")),
            "scraper": update(
                "scraper",
                app_url=sim.app_url,
                api_url=sim.api_url,
                email=sim.config.email,
                password=sim.config.password,
                page_size=50,
                request_interval_s=0.05,
                pass_interval_s=3600.0,
            ),
            "loader": update("loader", image_base_url=sim.cdn_url, batch_max_wait_s=0.5),
            "vectorizer": update(
                "vectorizer",
                model_dir=str(TINY_MODEL),
                providers=["CPUExecutionProvider"],
                allowed_image_hosts=[cdn.netloc],
                retry_backoff_s=5.0,
                poll_interval_s=1.0,
            ),
        }
    )


async def run_demo(config: Config, *, products: int, wait: bool) -> int:
    console = Console()
    console.print(
        "[bold]dahell demo[/bold]: a local Dropi simulator, the embedded database and the whole"
        " pipeline.\nThe image model is a [bold]tiny untrained SigLIP[/bold]: its embeddings find"
        " identical and near-identical photos, not semantic look-alikes. Export the real model"
        " with `python -m dahell export-model` for that."
    )
    async with Simulator(SimulatorConfig(products=products)) as sim:
        cfg = demo_config(config, sim)
        console.print(f"simulator: app {sim.app_url}, api {sim.api_url}, images {sim.cdn_url}")
        database = await db.connect(cfg)
        stages: list[Stage] = [ScraperStage(), LoaderStage(), VectorizerStage()]
        supervisor = Supervisor(cfg, stages, database.pool)
        server = StatusServer(supervisor)
        try:
            await server.start()
            console.print(f"status page: http://{cfg.http.listen}/")
            running = asyncio.create_task(supervisor.run())
            finished = await _progress(console, supervisor, products)
            await _summary(console, supervisor, finished)
            if wait and not running.done():
                console.print(
                    f"The status page stays up at http://{cfg.http.listen}/ — Ctrl-C to stop."
                )
            else:
                supervisor.request_stop(0, "demo finished")
            code = await running
        finally:
            await server.close()
            await database.close()
    return code


async def _progress(console: Console, sup: Supervisor, products: int) -> bool:
    """Print progress until the catalog is scraped, loaded and embedded (or time runs out)."""
    started = time.monotonic()
    while time.monotonic() - started < DEMO_TIMEOUT_S and not sup.stopping.is_set():
        await asyncio.sleep(PROGRESS_EVERY_S)
        with contextlib.suppress(Exception):
            counts = await gather_counts(sup.pool)
            emb = counts["embeddings"]
            states = ", ".join(f"{n} {rt.state.value}" for n, rt in sup.runtimes.items())
            console.print(
                f"[{time.monotonic() - started:5.0f}s] products {counts['products']}/{products}"
                f"  embedded {emb['done']}  pending {emb['pending']}  failed {emb['failed']}"
                f"  rejects {counts['rejects']}  ({states})"
            )
            if counts["products"] >= products and emb["pending"] == 0:
                return True
            parked = [rt for rt in sup.runtimes.values() if rt.state == StageState.PARKED]
            if parked:
                console.print(f"[red]stage parked[/red]: {parked[0].name}: {parked[0].last_error}")
                return False
    return False


async def _summary(console: Console, sup: Supervisor, finished: bool) -> None:
    counts = await gather_counts(sup.pool)
    console.print(
        f"\n[bold]{'Done' if finished else 'Stopped early'}[/bold]: {counts['products']} products"
        f" from {counts['suppliers']} suppliers in {counts['warehouses']} warehouses,"
        f" {counts['stock_log_rows']} stock-log rows, {counts['embeddings']['done']} embeddings,"
        f" failures by reason {counts['embeddings']['failed_by_reason'] or '{}'}."
    )
    row = await sup.pool.fetchrow(
        """SELECT a.product_id FROM product_embeddings a
           CROSS JOIN LATERAL (SELECT b.embedding_visual <=> a.embedding_visual AS d
                               FROM product_embeddings b WHERE b.product_id <> a.product_id
                               ORDER BY b.embedding_visual <=> a.embedding_visual LIMIT 1) n
           ORDER BY n.d LIMIT 1"""
    )
    if row is None:
        return
    with contextlib.suppress(SimilarError):
        result = await find_similar(sup.pool, row["product_id"], 5)
        console.print("\nLook-alike example (the same photo sold under other names):")
        console.print(render_table(result))
