"""The `groups` stage under the real supervisor: finds work in the database, exits when idle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from dahell.cli import STAGE_NAMES, build_stages
from dahell.stages.groups import GroupsStage
from dahell.supervisor import Supervisor
from tests.integration import research_history as h


def test_groups_is_a_default_stage() -> None:
    assert "groups" in STAGE_NAMES
    assert [s.name for s in build_stages(["groups"])] == ["groups"]


async def test_groups_stage_places_new_embeddings_then_exits_when_idle(
    pool: asyncpg.Pool, make_config: Any, pg_dsn: str, tmp_path: Path
) -> None:
    config = make_config(pg_dsn, RESEARCH__SAME_ITEM_DISTANCE=str(h.DISTANCE))
    await h.load_history(pool, config, tmp_path)
    await h.write_embeddings(pool, h.FIRST_EMBEDDINGS, h.AT)
    supervisor = Supervisor(config, [GroupsStage()], pool, exit_when_idle=True)
    assert await asyncio.wait_for(supervisor.run(), 60) == 0
    rows = await pool.fetch("SELECT product_id, group_id FROM research_groups")
    got = {r["product_id"]: r["group_id"] for r in rows}
    assert got[202] == 201 and got[403] == 401 and got[301] == 301
    view = supervisor.stage_view(supervisor.runtimes["groups"])
    assert view["counters"]["placed"] == len(h.FIRST_EMBEDDINGS)
    assert view["groups"] == 3 and view["multi_supplier_groups"] == 2
    rule = await pool.fetchval("SELECT value FROM research_upkeep WHERE name = 'rule'")
    assert rule == "distance=0.05"


async def test_a_new_distance_rebuilds_the_groups_at_start(
    pool: asyncpg.Pool, make_config: Any, pg_dsn: str, tmp_path: Path
) -> None:
    config = make_config(pg_dsn, RESEARCH__SAME_ITEM_DISTANCE=str(h.DISTANCE))
    await h.load_history(pool, config, tmp_path)
    await h.write_embeddings(pool, h.FIRST_EMBEDDINGS, h.AT)
    await Supervisor(config, [GroupsStage()], pool, exit_when_idle=True).run()
    tighter = make_config(pg_dsn, RESEARCH__SAME_ITEM_DISTANCE="0.035")
    await asyncio.wait_for(
        Supervisor(tighter, [GroupsStage()], pool, exit_when_idle=True).run(), 60
    )
    rows = await pool.fetch("SELECT product_id, group_id FROM research_groups")
    got = {r["product_id"]: r["group_id"] for r in rows}
    assert (got[401], got[402], got[403]) == (401, 402, 402)  # 0.042 is no longer a link
