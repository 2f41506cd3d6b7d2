"""`status` (and `/status`) read every count from one snapshot of the database.

A loader batch commits its products and its line totals together. Counts read by separate
statements could take the products from before a batch and the lines from after it: a status
that says every line is loaded while a batch of products is still missing (a container test
once saw exactly one batch's new products missing this way).
"""

from __future__ import annotations

import asyncio

import asyncpg

from dahell import status_command


async def _wait_for_lock_waiter(pool: asyncpg.Pool) -> None:
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("gather_counts never waited for the locked totals")


async def test_counts_come_from_one_snapshot_while_a_batch_commits(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as batch:
        tx = batch.transaction()
        await tx.start()
        # the batch holds the totals while status reads: status reads the products first
        await batch.execute("LOCK TABLE load_totals IN ACCESS EXCLUSIVE MODE")
        await batch.execute(
            "INSERT INTO products (product_id, last_seen_at, captured_at, content_hash)"
            " VALUES (1, now(), now(), '\\x00')"
        )
        await batch.execute("INSERT INTO load_totals (outcome, lines, products) VALUES"
                            " ('loaded', 1, 0), ('inserted', 0, 1)")  # fmt: skip
        reading = asyncio.create_task(status_command.gather_counts(pool))
        await _wait_for_lock_waiter(pool)
        await tx.commit()
        counts = await reading
    seen = (counts["products"], counts["lines_loaded"], counts["products_by_outcome"])
    assert seen in ((0, 0, {}), (1, 1, {"inserted": 1})), seen
    again = await status_command.gather_counts(pool)
    assert (again["products"], again["lines_loaded"]) == (1, 1)
