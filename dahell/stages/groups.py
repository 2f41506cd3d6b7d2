"""The groups stage: keeps same-item groups up to date as embeddings arrive.

Work lives in the database (invariant 3): each round asks `research.groups.upkeep_round` for up
to `research.batch_size` new or changed embeddings since its watermark, places them through
the HNSW index, and commits; nothing is held in memory between rounds, so a restart (or a kill)
only repeats the round in flight. At start, groups built with another
`research.same_item_distance` are rebuilt once (`ensure_rule`). With nothing to do the stage is
idle and looks again every `research.poll_interval_s` (every half second under
`--exit-when-idle`, so the daemon does not exit while the vectorizer's last embeddings wait).

It also refreshes the per-product sales summary that `top --by sales` ranks by
(`research.sales.refresh_summary`) when the stock history moved on, at most once a minute.

Outcomes counted: `placed`, `moved`, `removed`, `rebuilt` (products), `merged` and `split`
(groups);
/status also shows `groups`, `grouped_products`, `multi_supplier_groups`, `largest_group`.
"""

from __future__ import annotations

import time

from dahell.research import groups, sales
from dahell.research.queries import pending_embeddings
from dahell.stages.base import Context

__all__ = ["GroupsStage"]

#: How often the group counts shown in /status are refreshed while working.
STATS_EVERY_S = 10.0
#: Least time between two refreshes of the sales summary the ranking reads.
SALES_REFRESH_S = 60.0
#: Poll interval under `--exit-when-idle` (below the supervisor's idle settle time).
IDLE_POLL_S = 0.5


class GroupsStage:
    """Runs `upkeep_round` until shutdown; see the module docstring."""

    name = "groups"

    async def run(self, ctx: Context) -> None:
        cfg = ctx.config.research
        async with ctx.working():
            rebuilt = await groups.ensure_rule(ctx.pool, cfg.same_item_distance, k=cfg.neighbours)
        if rebuilt is not None:
            ctx.count("rebuilt", n=rebuilt.placed)
            ctx.log.info(
                "groups_rebuilt",
                products=rebuilt.placed,
                distance=cfg.same_item_distance,
                seconds=round(rebuilt.seconds, 3),
            )
        stats_at = refreshed_at = -SALES_REFRESH_S
        while not ctx.stopping.is_set():
            result = await self._round(ctx)
            if time.monotonic() - stats_at > STATS_EVERY_S or not result.work:
                await self._stats(ctx)
                stats_at = time.monotonic()
            if time.monotonic() - refreshed_at >= SALES_REFRESH_S:
                await self._refresh_sales(ctx)
                refreshed_at = time.monotonic()
            if result.work:
                continue
            ctx.set_idle(True)
            poll = IDLE_POLL_S if ctx.exit_when_idle else ctx.config.research.poll_interval_s
            if await ctx.sleep(poll):
                return

    async def _round(self, ctx: Context) -> groups.UpkeepResult:
        cfg = ctx.config.research
        async with ctx.working():
            result = await groups.upkeep_round(
                ctx.pool, cfg.same_item_distance, k=cfg.neighbours, batch=cfg.batch_size
            )
        for outcome in ("placed", "moved", "removed"):
            ctx.count(outcome, n=getattr(result, outcome))
        ctx.count("merged", n=result.merged_groups)
        ctx.count("split", n=result.split_groups)
        if result.work:
            ctx.set_idle(False)
            ctx.observe_batch(result.seconds)
            ctx.log.info(
                "groups_updated",
                placed=result.placed,
                moved=result.moved,
                removed=result.removed,
                merged=result.merged_groups,
                split=result.split_groups,
                seconds=round(result.seconds, 3),
            )
        return result

    async def _refresh_sales(self, ctx: Context) -> None:
        started = time.monotonic()
        async with ctx.working():
            rows = await sales.refresh_summary(ctx.pool)
        if rows is not None:
            ctx.count("sales_refreshed")
            ctx.log.info(
                "sales_summary_refreshed",
                products=rows,
                seconds=round(time.monotonic() - started, 3),
            )

    async def _stats(self, ctx: Context) -> None:
        stats = await groups.group_stats(ctx.pool)
        pending = await pending_embeddings(ctx.pool)
        ctx.status_extra.update(stats.as_dict(), pending_embeddings=pending)
