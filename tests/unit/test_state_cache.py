"""`StateCache.begin`: the rows a loader kept are used only right after its own last commit."""

from __future__ import annotations

from datetime import UTC, datetime

from dahell.catalog_store import StateCache
from dahell.catalog_store.state import _Known

STARTED = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
RESTARTED = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def cache_after_batch(number: int, products: int = 1) -> StateCache:
    cache = StateCache(max_products=10)
    cache.begin((STARTED, number))
    for pid in range(products):
        cache.products.add(pid)
        cache.state.known[pid] = _Known(b"h", STARTED, STARTED, None)
    cache.committed((STARTED, number))
    return cache


def test_the_next_number_on_the_same_server_run_keeps_the_rows() -> None:
    cache = cache_after_batch(41)
    assert cache.begin((STARTED, 42)) is True
    assert cache.products == {0} and 0 in cache.state.known


def test_a_gap_in_the_numbers_empties_it() -> None:
    cache = cache_after_batch(41)
    assert cache.begin((STARTED, 43)) is False
    assert cache.products == set() and cache.state.known == {}


def test_a_server_restart_empties_it_even_when_the_number_follows() -> None:
    """A crash can lose the last commits and the sequence's last numbers with them."""
    cache = cache_after_batch(41)
    assert cache.begin((RESTARTED, 42)) is False
    assert cache.products == set()


def test_a_batch_that_did_not_commit_empties_it() -> None:
    cache = cache_after_batch(41)
    cache.begin((STARTED, 42))  # fails: committed() is never called
    assert cache.begin((STARTED, 43)) is False


def test_committed_for_another_batch_changes_nothing() -> None:
    cache = cache_after_batch(41)
    cache.begin((STARTED, 42))
    cache.committed((STARTED, 41))
    assert cache.begin((STARTED, 43)) is False


def test_discard_during_a_batch_keeps_its_commit_from_validating_the_rows() -> None:
    cache = cache_after_batch(41)
    cache.begin((STARTED, 42))
    cache.discard()  # a refused row split the batch
    cache.committed((STARTED, 42))
    assert cache.begin((STARTED, 43)) is False


def test_more_products_than_its_bound_empties_it() -> None:
    cache = cache_after_batch(41, products=11)
    assert cache.begin((STARTED, 42)) is False
    assert cache.products == set()
