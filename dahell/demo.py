"""`python -m dahell demo`: the whole pipeline against a local Dropi simulator, in one command.

Starts the simulator (three 127.0.0.1 origins), the embedded database under
`<data_dir>/demo`, and the daemon with its four stages and the tiny untrained SigLIP model.
The scraper runs `--days` quick passes (14 by default); the simulator's catalog moves a simulated
day between two passes (sales at each product's own rate, restocks, price moves, listings that
come and go) and the scraper stamps each capture with the simulator's clock, so two weeks of
history take seconds and the research answers (units sold per day, margins, suppliers of the
same item) are real. Ends with a summary, a look-alike example, the best sellers and one item's
offers; then serves the status and research pages until Ctrl-C (or exits with `--no-wait`).

The simulated clock only touches capture times: the journal lines are the scraper's usual
lines, loaded by the usual loader. The demo's data folder starts empty on every run, so the
history of an earlier demo never mixes with this one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from dahell import db
from dahell.config import Config
from dahell.console import make_console
from dahell.http import StatusServer
from dahell.i18n import format_cop, format_number
from dahell.research.queries import ResearchFilters, product_detail, research_rows
from dahell.research.top_command import render_table as render_research_table
from dahell.similar import SimilarError, find_similar, render_table
from dahell.simulator import Simulator, SimulatorConfig
from dahell.stages.base import Stage, StageState
from dahell.stages.groups import GroupsStage
from dahell.stages.loader import LOADED, LoaderStage
from dahell.stages.scraper import ScraperStage
from dahell.stages.vectorizer import VectorizerStage
from dahell.status_command import gather_counts
from dahell.supervisor import Supervisor

TINY_MODEL = Path(__file__).resolve().parent.parent / "models" / "tiny-siglip"
PROGRESS_EVERY_S = 2.0
POLL_S = 0.25
DEMO_TIMEOUT_S = 900.0
DEFAULT_DAYS = 14
CHURN = 0.01  # share of listings that vanish per simulated day (about as many appear)
BEST_SELLERS = 10
# The tiny model's own threshold: copies of one photo land within 0.001 of each other, the
# nearest unrelated photos about 0.004 apart (the default suits the real SigLIP, not this one).
TINY_MODEL_SAME_ITEM = 0.002


def simulator_config(products: int, days: int) -> SimulatorConfig:
    """A catalog that moves one day per pass, ending now: `days` passes, then it holds still."""
    start = datetime.now(UTC) - timedelta(days=days - 1, minutes=5)
    return SimulatorConfig(
        products=products,
        churn=CHURN,
        pass_days=1.0,
        start_at=start,
        advance_each_pass=True,
        max_passes=days - 1,
    )


def demo_config(config: Config, sim: Simulator) -> Config:
    """The user's config, pointed at the simulator, the tiny model and a separate data folder."""
    cdn = urlsplit(sim.cdn_url)

    def update(name: str, **values: Any) -> Any:
        return getattr(config, name).model_copy(update=values)

    return config.model_copy(
        update={
            "paths": update("paths", data_dir=str(Path(config.paths.data_dir) / "demo")),
            "database": update("database", dsn=""),  # never the user's real database
            "scraper": update(
                "scraper",
                app_url=sim.app_url,
                api_url=sim.api_url,
                email=sim.config.email,
                password=sim.config.password,
                page_size=100,
                request_interval_s=0.02,
                pass_interval_s=0.1,  # quick passes; raised to an hour once the last one starts
            ),
            "loader": update("loader", image_base_url=sim.cdn_url, batch_max_wait_s=0.2),
            "vectorizer": update(
                "vectorizer",
                model_dir=str(TINY_MODEL),
                providers=["CPUExecutionProvider"],
                allowed_image_hosts=[cdn.netloc],
                retry_backoff_s=5.0,
                poll_interval_s=0.5,
            ),
            "research": update(
                "research", poll_interval_s=0.5, same_item_distance=TINY_MODEL_SAME_ITEM
            ),
        }
    )


def fresh_data_dir(cfg: Config) -> None:
    """Start the demo's own folder empty: its history is simulated days that end now.

    An embedded server left running there by a killed demo is stopped first.
    """
    folder = Path(cfg.paths.data_dir)
    if folder.name != "demo" or not folder.exists():
        return
    _stop_leftover_server(folder / "pg")
    shutil.rmtree(folder)


def _stop_leftover_server(pgdata: Path, timeout: float = 10.0) -> None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)  # fast shutdown
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)


async def run_demo(config: Config, *, products: int, wait: bool, days: int = DEFAULT_DAYS) -> int:
    console = make_console()
    console.print(
        "[bold]dahell demo[/bold]: a local Dropi simulator, the embedded database and the whole"
        f" pipeline, over {days} simulated days.\nThe image model is a [bold]tiny untrained"
        " SigLIP[/bold]: its embeddings find identical and near-identical photos, not semantic"
        " look-alikes. Export the real model with `python -m dahell export-model` for that."
    )
    started = time.monotonic()
    async with Simulator(simulator_config(products, days)) as sim:
        cfg = demo_config(config, sim)
        fresh_data_dir(cfg)
        console.print(f"simulator: app {sim.app_url}, api {sim.api_url}, images {sim.cdn_url}")
        database = await db.connect(cfg)
        stages: list[Stage] = [
            ScraperStage(clock=sim.clock),
            LoaderStage(),
            VectorizerStage(),
            GroupsStage(),
        ]
        supervisor = Supervisor(cfg, stages, database.pool)
        sim.on_new_pass = hold_after_last_pass(supervisor, days)
        server = StatusServer(supervisor)
        try:
            await server.start()
            console.print(f"status page: http://{cfg.http.listen}/")
            running = asyncio.create_task(supervisor.run())
            finished = await _progress(console, supervisor, sim, days)
            await _summary(console, supervisor, finished)
            await _research(console, supervisor)
            console.print(
                f"\nInvestigación (research page): http://{cfg.http.listen}/research"
                f"\nThe same ranking later: DAHELL_PATHS__DATA_DIR={cfg.paths.data_dir}"
                " python -m dahell top"
                f"\nDemo time: {time.monotonic() - started:.1f} s"
            )
            if wait and not running.done():
                console.print(f"The pages stay up at http://{cfg.http.listen}/ — Ctrl-C to stop.")
            else:
                supervisor.request_stop(0, "demo finished")
            code = await running
        finally:
            await server.close()
            await database.close()
    return code


# --- progress ------------------------------------------------------------------------------


def _count(sup: Supervisor, stage: str, *outcomes: str) -> int:
    runtime = sup.runtimes.get(stage)
    if runtime is None:
        return 0
    counts = Supervisor.outcome_counts(runtime)
    return sum(counts[o] for o in outcomes)


def hold_after_last_pass(sup: Supervisor, days: int) -> Callable[[int], None]:
    """The simulator's new-pass hook: once the last day's pass starts, no quick pass follows."""

    def on_new_pass(pass_no: int) -> None:
        if pass_no >= days - 1 and sup.config.scraper.pass_interval_s < 3600:
            scraper = sup.config.scraper.model_copy(update={"pass_interval_s": 3600.0})
            sup.config = sup.config.model_copy(update={"scraper": scraper})

    return on_new_pass


async def _caught_up(sup: Supervisor, days: int) -> tuple[bool, dict[str, Any]]:
    """Whether every pass is scraped, loaded, embedded and grouped; and the counts so far."""
    counts = await gather_counts(sup.pool)
    captured = _count(sup, "scraper", "products")
    loaded = _count(sup, "loader", *LOADED, "rejected")
    groups = sup.runtimes.get("groups")
    done = (
        _count(sup, "scraper", "passes") >= days
        and loaded >= captured
        and counts["embeddings"]["pending"] == 0
        and (groups is None or groups.ctx.idle)
    )
    return done, counts


async def _progress(console: Console, sup: Supervisor, sim: Simulator, days: int) -> bool:
    """Print progress until every pass is in and embedded and grouped (or time runs out)."""
    started = time.monotonic()
    printed = 0.0
    while time.monotonic() - started < DEMO_TIMEOUT_S and not sup.stopping.is_set():
        await asyncio.sleep(POLL_S)
        with contextlib.suppress(Exception):
            done, counts = await _caught_up(sup, days)
            now = time.monotonic()
            if done or now - printed >= PROGRESS_EVERY_S:
                printed = now
                _print_progress(console, sup, sim, days, counts, now - started)
            if done:
                return True
            parked = [rt for rt in sup.runtimes.values() if rt.state == StageState.PARKED]
            if parked:
                console.print(f"[red]stage parked[/red]: {parked[0].name}: {parked[0].last_error}")
                return False
    return False


def _print_progress(
    console: Console,
    sup: Supervisor,
    sim: Simulator,
    days: int,
    counts: dict[str, Any],
    elapsed: float,
) -> None:
    emb = counts["embeddings"]
    passes = min(days, _count(sup, "scraper", "passes"))
    states = ", ".join(f"{n} {rt.state.value}" for n, rt in sup.runtimes.items())
    console.print(
        f"[{elapsed:5.0f}s] day {passes}/{days} ({sim.clock():%Y-%m-%d})"
        f"  products {counts['products']}  stock-log {counts['stock_log_rows']}"
        f"  embedded {emb['done']}  pending {emb['pending']}  failed {emb['failed']}"
        f"  rejects {counts['rejects']}  ({states})"
    )


# --- what the demo shows at the end ---------------------------------------------------------


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
           JOIN products pa ON pa.product_id = a.product_id
           CROSS JOIN LATERAL (SELECT b.embedding_visual <=> a.embedding_visual AS d
                               FROM product_embeddings b
                               JOIN products pb ON pb.product_id = b.product_id
                               WHERE b.product_id <> a.product_id
                                 AND pb.supplier_id IS DISTINCT FROM pa.supplier_id
                               ORDER BY b.embedding_visual <=> a.embedding_visual LIMIT 1) n
           ORDER BY n.d, a.product_id LIMIT 1"""
    )
    if row is None:
        return
    with contextlib.suppress(SimilarError):
        result = await find_similar(sup.pool, row["product_id"], 5)
        console.print("\nLook-alike example (the same photo sold under other names):")
        console.print(render_table(result))


async def _research(console: Console, sup: Supervisor) -> None:
    """The best sellers (as `dahell top` shows them) and the offers of one item."""
    page = await research_rows(sup.pool, ResearchFilters(by="sales", limit=BEST_SELLERS))
    console.print()
    console.print(render_research_table(page, "es"))
    grouped = await research_rows(sup.pool, ResearchFilters(by="suppliers", limit=50))
    candidates = [i for i in grouped.items if (i.get("group_suppliers") or 1) > 1]
    if not candidates:
        console.print("Ningún artículo tiene aún varios proveedores.")
        return

    def market(item: dict[str, Any]) -> tuple[int, float, int]:
        return item["group_suppliers"], item.get("group_units_per_day_30d") or 0, item["product_id"]

    best = max(candidates, key=market)
    detail = await product_detail(sup.pool, best["product_id"])
    if detail and detail["group"]:
        console.print()
        console.print(offers_table(detail["group"]))


def offers_table(group: dict[str, Any]) -> Table:
    """One item's offers side by side, cheapest first and marked (Spanish, pesos `$ 45.000`)."""
    table = Table(
        title=(
            f"Un artículo, {group['suppliers']} proveedores: de {format_cop(group['min_price'])}"
            f" a {format_cop(group['max_price'])};"
            f" ventas del artículo {format_number(group['units_per_day_30d'], 'es', 2)}"
            " uds/día (30 d)"
        ),
        title_justify="left",
    )
    for name, justify in [
        ("", "left"),
        ("Producto", "right"),
        ("Título", "left"),
        ("Proveedor", "left"),
        ("Precio proveedor", "right"),
        ("Precio sugerido", "right"),
        ("Margen", "right"),
        ("Stock", "right"),
        ("Uds/día 30d", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    offers = sorted(group["offers"], key=lambda o: (o["sale_price"] is None, o["sale_price"]))
    for offer in offers:
        cheapest = offer["product_id"] == group["cheapest_product_id"]
        table.add_row(
            "[green]más barato[/green]" if cheapest else "",
            str(offer["product_id"]),
            (offer["title"] or "")[:44],
            (offer["supplier_name"] or "-")[:24],
            format_cop(offer["sale_price"]),
            format_cop(offer["suggested_price"]),
            format_cop(offer["margin"]),
            format_number(offer["stock"]),
            format_number(offer["units_per_day_30d"], "es", 2),
            style="bold" if cheapest else None,
        )
    return table
