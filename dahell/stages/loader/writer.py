"""Writing a chunk: one transaction holding its rows, its rejects and its checkpoint, under the
loaders' lock; rows the database refuses are isolated by splitting the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncpg

from dahell import dropi
from dahell.catalog_store import STAGING, StateCache, Unit, apply_batch
from dahell.config import Config
from dahell.sources import fingerprint
from dahell.stages.loader.chunks import _Chunk, _Item, _parse_one, _Source
from dahell.stages.loader.stats import FileReport, LoadStats, _count_lines, _totals

# Serialises loaders across processes: history rows depend on the state before each batch.
LOADER_LOCK_KEY = 0x6461_6865_6C6C_01
DATA_ERROR_CLASSES = ("21", "22", "23", "54")
#: Products whose rows a loader keeps between its batches (`catalog_store.StateCache`), at most:
#: a backfill's whole catalog (tens of thousands), about 1.5 KB each.
STATE_CACHE_MAX_PRODUCTS = 100_000

# Asynchronous commit: a power cut can lose the last few batches, rows and checkpoint together,
# and the next start loads them again from the journal. One round trip with the lock and the
# session's staging tables.
_PROLOGUE = (
    "SET LOCAL synchronous_commit = off; SET LOCAL dahell.loader_batch = 'on';"
    f" SELECT pg_advisory_xact_lock({LOADER_LOCK_KEY});"
    f" {STAGING}"
)
# Where the file's committed lines end (locked), and this batch's number (007_loader_batches):
# the server's start time with it, as a crash can lose the last commits and numbers alike.
_BEGIN_BATCH = (
    "SELECT (SELECT byte_offset FROM load_checkpoints WHERE source = $1 FOR UPDATE),"
    " pg_postmaster_start_time(), nextval('loader_batches')"
)
_SAVE_CHECKPOINT = """
WITH totals AS (
    INSERT INTO load_totals AS t (outcome, lines, products)
    SELECT * FROM unnest($10::text[], $11::bigint[], $12::bigint[])
    ON CONFLICT (outcome) DO UPDATE SET lines = t.lines + excluded.lines,
        products = t.products + excluded.products
)
INSERT INTO load_checkpoints AS c (source, fingerprint, head_len, byte_offset, line_no,
    lines_loaded, lines_rejected, completed, file_size, file_mtime_ns, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8, $9, now())
ON CONFLICT (source) DO UPDATE SET fingerprint = excluded.fingerprint,
    head_len = excluded.head_len, byte_offset = excluded.byte_offset,
    line_no = excluded.line_no,
    lines_loaded = c.lines_loaded + excluded.lines_loaded,
    lines_rejected = c.lines_rejected + excluded.lines_rejected,
    file_size = excluded.file_size, file_mtime_ns = excluded.file_mtime_ns,
    updated_at = now()
"""


class SourceBusy(Exception):
    """Another process moved this file's checkpoint while we were loading it."""


class BatchWriter:
    """Commits chunks of one source: rows, rejects and checkpoint in one transaction each.

    Only a line's own content rejects it: a database error of a data class (`DATA_ERROR_CLASSES`)
    splits the batch until the refused rows are isolated (`db_error:<sqlstate>`); any other
    error leaves the batch uncommitted, to be tried again.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        config_getter: Callable[[], Config],
        log: Any,
        on_batch: Callable[[LoadStats, float], None] | None = None,
    ) -> None:
        self.pool = pool
        self.config_getter = config_getter
        self.log = log
        self.on_batch = on_batch
        self._state_cache = StateCache(STATE_CACHE_MAX_PRODUCTS)

    @property
    def config(self) -> Config:
        return self.config_getter()

    async def _commit(self, source: _Source, chunk: _Chunk, report: FileReport) -> None:
        started = time.perf_counter()
        stats = LoadStats()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_PROLOGUE)
            committed, server_start, number = await conn.fetchrow(_BEGIN_BATCH, source.key)
            batch_number = (server_start, number)
            if (committed or 0) != chunk.start:
                raise SourceBusy(
                    f"{source.path}: checkpoint at {committed}, expected {chunk.start}"
                )
            self._state_cache.begin(batch_number)
            rejects = await self._write_items(conn, source, chunk.items, stats)
            await self._write_rejects(conn, source.key, rejects)
            await self._save_checkpoint(conn, source, chunk, stats)
        self._state_cache.committed(batch_number)
        source.offset, source.line_no = chunk.end, chunk.end_line_no
        report.end_offset = chunk.end
        report.stats.add(stats)
        elapsed = time.perf_counter() - started
        self.log.info(
            "batch_loaded",
            source=source.key,
            lines=stats.lines,
            loaded=stats.loaded,
            rejected=stats.rejected,
            products=stats.products,
            inserted=stats.inserted,
            updated=stats.updated,
            unchanged=stats.unchanged,
            products_rejected=stats.products_rejected,
            history_rows=stats.history_rows,
            end_offset=chunk.end,
            duration_s=round(elapsed, 4),
        )
        if self.on_batch is not None:
            self.on_batch(stats, elapsed)

    async def _write_items(
        self, conn: asyncpg.Connection, source: _Source, items: list[_Item], stats: LoadStats
    ) -> list[tuple[_Item, str, str]]:
        """Apply the records, isolating rows the database refuses; return the rejects."""
        records = [(i, i.outcome) for i in items if not isinstance(i.outcome, dropi.Rejection)]
        loaded, refused = await self._apply_isolating(
            conn, source, records, stats, self._state_cache
        )
        rejects = [
            (i, i.outcome.reason, i.outcome.detail)
            for i in items
            if isinstance(i.outcome, dropi.Rejection)
        ]
        rejects.extend(refused)
        rejects.sort(key=lambda r: (r[0].line.offset, r[0].line.line_no))
        for _, outcome in loaded:
            stats.count_product(outcome)
        for _, reason, _ in rejects:
            stats.count_product("rejected", reason)
        _count_lines(items, {id(item) for item, _ in loaded}, stats)
        return rejects

    async def _apply_isolating(
        self,
        conn: asyncpg.Connection,
        source: _Source,
        records: list[tuple[_Item, dropi.ProductRecord | dropi.Seen]],
        stats: LoadStats,
        cache: StateCache | None = None,
        first: bool = True,
    ) -> tuple[list[tuple[_Item, str]], list[tuple[_Item, str, str]]]:
        """Each record's outcome, and the records the database refused (with their reason).
        `cache`: the loader's rows kept from its earlier batches, for the first application;
        a refusal discards them (the parts then read what they start from).
        `first`: the transaction's first application (its staging tables are still empty)."""
        if not records:
            return [], []
        fallback = source.fallback_time
        units = [
            Unit(
                rec,
                rec.captured_at or fallback,
                self._expander(item) if isinstance(rec, dropi.Seen) else None,
            )
            for item, rec in records
        ]
        try:
            async with conn.transaction():
                result = await apply_batch(conn, units, clear_staging=not first, cache=cache)
        except (asyncpg.PostgresError, asyncpg.exceptions.DataError) as exc:
            if cache is not None:
                cache.discard()
            sqlstate = getattr(exc, "sqlstate", None) or "22000"
            if not sqlstate.startswith(DATA_ERROR_CLASSES) and isinstance(
                exc, asyncpg.PostgresError
            ):
                raise
            if len(records) == 1:
                detail = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
                return [], [(records[0][0], f"db_error:{sqlstate}", detail)]
            mid = len(records) // 2
            head = await self._apply_isolating(conn, source, records[:mid], stats, first=False)
            tail = await self._apply_isolating(conn, source, records[mid:], stats, first=False)
            return head[0] + tail[0], head[1] + tail[1]
        stats.history_rows += result.history_rows
        stats.pending_embeddings += result.pending_embeddings
        loaded = [
            (item, outcome) for (item, _), outcome in zip(records, result.outcomes, strict=True)
        ]
        return loaded, []

    def _expander(self, item: _Item) -> Callable[[], dropi.ProductRecord] | None:
        """For a `Seen`: the full record, parsed again from the line (called only when the
        database holds other content for that product)."""
        if not isinstance(item.outcome, dropi.Seen):
            return None
        seen, config = item.outcome, self.config

        def expand() -> dropi.ProductRecord:
            outcomes = _parse_one(item.line, config)
            record = outcomes[0] if len(outcomes) == 1 else None
            if (
                not isinstance(record, dropi.ProductRecord)
                or record.content_hash != seen.content_hash
            ):
                raise RuntimeError(f"line {item.line.line_no} parsed differently in the worker")
            return record

        return expand

    async def _write_rejects(
        self, conn: asyncpg.Connection, key: str, rejects: list[tuple[_Item, str, str]]
    ) -> None:
        if not rejects:
            return
        cap = self.config.loader.reject_raw_max_bytes
        rows = [
            (
                key,
                item.line.line_no,
                item.line.offset,
                reason,
                _clean(detail)[:2000],
                _clean(dropi.decode_line(item.line.data[:cap])),
            )
            for item, reason, detail in rejects
        ]
        await conn.copy_records_to_table(
            "rejects",
            records=rows,
            columns=("source", "line_no", "byte_offset", "reason", "detail", "raw_text"),
        )

    async def _save_checkpoint(
        self, conn: asyncpg.Connection, source: _Source, chunk: _Chunk, stats: LoadStats
    ) -> None:
        """The file's new position and the totals, in one statement of the batch's transaction."""
        head_len = min(len(source.head), chunk.end)
        totals = _totals(stats)
        await conn.execute(
            _SAVE_CHECKPOINT,
            source.key,
            fingerprint(source.head[:head_len]),
            head_len,
            chunk.end,
            chunk.end_line_no,
            stats.loaded,
            stats.rejected,
            source.state.size,
            source.state.mtime_ns,
            list(totals),
            [v[0] for v in totals.values()],
            [v[1] for v in totals.values()],
        )


def _clean(text: str) -> str:
    return text.replace("\x00", "")
