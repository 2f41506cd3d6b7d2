"""Writes normalised product records into the catalog tables, one batch per call.

The batch is applied as if its records arrived one at a time in line order, whatever the batch
boundaries: a record older than what the database (or an earlier line) already holds changes
nothing; a record whose content hash equals the current one only moves `last_seen_at`; stock and
price history get a row only where a value is first seen or differs from the previous one. So
loading the same lines in one batch or in ten gives the same rows (what makes a replay after a
crash indistinguishable from a clean run). That holds for the shared rows too: a supplier keeps
the values of its newest capture (`suppliers.captured_at`), a warehouse the name and city of its
newest sighting (`last_seen_at`), whichever product brought them; and the rows every record of
the batch touched (variations, category names, embedding work) are written as each record, not
only the last one per product, would have written them.

Writes: COPY into temporary staging tables, then one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
per table; stock history rows are COPYed straight into their tables. Prices travel as text and
are cast by PostgreSQL: asyncpg's binary `numeric` encoder costs ~2 µs a value, about a quarter
of the loader's own CPU time before this.

Modules: `sql` (the statements), `state` (units in, the rows a batch starts from, read in one
round trip, or kept from the loader's previous batch: `StateCache`), `plan` (the replay in line
order, pure), `write` (the writes).
"""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from dahell.catalog_store.plan import _plan
from dahell.catalog_store.sql import _CLEAR_STAGING, OUTCOMES, STAGING
from dahell.catalog_store.state import BatchOutcome, StateCache, Unit, _read_state
from dahell.catalog_store.write import _write

__all__ = [
    "OUTCOMES",
    "STAGING",
    "BatchOutcome",
    "StateCache",
    "Unit",
    "apply_batch",
    "count_outcomes",
]


async def apply_batch(
    conn: asyncpg.Connection,
    units: list[Unit],
    *,
    clear_staging: bool = True,
    cache: StateCache | None = None,
) -> BatchOutcome:
    """Apply `units` inside the caller's transaction; return each unit's outcome.

    `clear_staging=False` only where the staging tables are known to be empty (the first
    application in a transaction: ON COMMIT DELETE ROWS emptied them). `cache`: rows kept from
    the caller's previous batches, valid now (`StateCache.begin`); they are brought to what
    this batch writes, so the caller must discard them if it does not commit it.
    """
    if not units:
        return BatchOutcome([])
    # ON COMMIT DELETE ROWS empties the staging tables at commit only: a batch split to isolate
    # a refused row applies several parts in one transaction, and must not see the rows of a
    # part before it (they would be written again, over newer values).
    if clear_staging:
        await conn.execute(_CLEAR_STAGING)
    before = await _read_state(conn, units, cache)
    plan = _plan(units, before.known, before.stock, before.prices)
    pending = await _write(conn, plan, before)
    return BatchOutcome(
        plan.outcomes,
        pending_embeddings=pending,
        history_rows=len(plan.stock_log) + len(plan.variation_stock_log) + len(plan.price_log),
    )


def count_outcomes(outcomes: list[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        counts[outcome] += 1
    return dict(counts)
