"""What a batch starts from: its units in, the database's rows for them (read in one round
trip), and its outcome out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import asyncpg

from dahell.catalog_store.sql import _READ_STATE
from dahell.dropi import ProductRecord, Seen


@dataclass(slots=True)
class Unit:
    """One record on its way in and when it was captured.

    A `Seen` stands for a record whose content hash the parser already met: when the database
    (or an earlier unit) holds that content, it only moves `last_seen_at`; otherwise `expand`
    gives the full record.
    """

    record: ProductRecord | Seen
    captured_at: datetime
    expand: Callable[[], ProductRecord] | None = None


@dataclass
class BatchOutcome:
    outcomes: list[str]  # one per unit, in order: inserted / updated / unchanged
    pending_embeddings: int = 0
    history_rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Known:
    content_hash: bytes
    last_seen: datetime
    captured_at: datetime
    image_url: str | None


@dataclass(slots=True)
class _WarehouseRow:
    name: str | None
    city: str | None
    first_seen: datetime
    last_seen: datetime


BatchNumber = tuple[datetime, int]
PriceKey = tuple[int, int]
StockKey = tuple[int, int, int]
Prices = tuple[Decimal | None, Decimal | None]


@dataclass
class _State:
    """What the database holds for a batch's products and warehouses before it is applied."""

    known: dict[int, _Known] = field(default_factory=dict)
    stock: dict[StockKey, int] = field(default_factory=dict)
    prices: dict[PriceKey, Prices] = field(default_factory=dict)
    categories: dict[int, set[str]] = field(default_factory=dict)
    job_urls: dict[int, str | None] = field(default_factory=dict)
    warehouses: dict[int, _WarehouseRow] = field(default_factory=dict)


class StateCache:
    """The rows of the products and warehouses a loader's recent batches read or wrote, kept
    for its next batch, which then reads only the ones it has not met (a backfill meets each
    product about 14 times).

    The plan and the writes bring these rows to what the batch committed (they change them in
    place), so they stay true while only this loader writes: each batch takes the next number
    of the `loader_batches` sequence under the loaders' lock (any other write to these tables
    takes one too, sql/007_loader_batches.sql), and the rows are kept only when it follows the
    number of this loader's previous committed batch, on the same server run (`begin`).
    Anything else (another writer in between, a server restart, a batch that failed or was
    split to isolate a refused row) empties the cache. At most `max_products` products are
    kept (then it starts again empty).
    """

    def __init__(self, max_products: int) -> None:
        self.max_products = max_products
        self.state = _State()
        self.products: set[int] = set()
        self.warehouses: set[int] = set()
        self._committed: BatchNumber | None = None  # the last batch it is true after
        self._open: BatchNumber | None = None  # the batch now changing it

    def begin(self, batch_number: BatchNumber) -> bool:
        """A batch took `batch_number` (the server's start time, the sequence's number) under
        the lock: keep the rows if they are still true."""
        previous = self._committed
        kept = (
            previous is not None
            and batch_number == (previous[0], previous[1] + 1)
            and len(self.products) <= self.max_products
        )
        if not kept:
            self.discard()
        self._committed, self._open = None, batch_number
        return kept

    def committed(self, batch_number: BatchNumber) -> None:
        """The batch that began with `batch_number` committed, and the rows are its result."""
        if self._open == batch_number:
            self._committed, self._open = batch_number, None

    def discard(self) -> None:
        self.state = _State()
        self.products, self.warehouses = set(), set()
        self._committed = self._open = None


async def _read_state(
    conn: asyncpg.Connection, units: list[Unit], cache: StateCache | None = None
) -> _State:
    """One round trip for every row the plan and the writes start from (`_READ_STATE`); with a
    cache, only for the products and warehouses it does not hold, added to it."""
    ids = {u.record.product_id for u in units}
    warehouse_ids = {
        wh.warehouse_id for u in units if isinstance(u.record, ProductRecord)
        for wh in u.record.warehouses
    }  # fmt: skip
    state = _State() if cache is None else cache.state
    if cache is not None:
        ids -= cache.products
        warehouse_ids -= cache.warehouses
        cache.products |= ids
        cache.warehouses |= warehouse_ids
    if ids or warehouse_ids:
        for r in await conn.fetch(_READ_STATE, sorted(ids), sorted(warehouse_ids)):
            _READERS[r[0]](state, r)
    return state


def _read_product(state: _State, r: asyncpg.Record) -> None:
    state.known[r[1]] = _Known(bytes(r[5]), r[6], r[7], r[8])
    state.prices[(r[1], 0)] = (r[10], r[11])


def _read_stock(state: _State, r: asyncpg.Record) -> None:
    state.stock[(r[1], r[2], r[3])] = r[4]


def _read_variation(state: _State, r: asyncpg.Record) -> None:
    state.prices[(r[1], r[2])] = (r[10], r[11])


def _read_category(state: _State, r: asyncpg.Record) -> None:
    state.categories.setdefault(r[1], set()).add(r[8])


def _read_job(state: _State, r: asyncpg.Record) -> None:
    state.job_urls[r[1]] = r[8]


def _read_warehouse(state: _State, r: asyncpg.Record) -> None:
    state.warehouses[r[1]] = _WarehouseRow(r[8], r[9], r[6], r[7])


_READERS = (_read_product, _read_stock, _read_variation, _read_category, _read_job, _read_warehouse)
