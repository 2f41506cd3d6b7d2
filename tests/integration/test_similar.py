"""Look-alike search on a real PostgreSQL with pgvector: neighbours, errors, JSON, table, search."""

from __future__ import annotations

import json
from decimal import Decimal

import asyncpg
import numpy as np
import pytest

from dahell.similar import (
    NoEmbedding,
    ProductNotFound,
    find_similar,
    render_table,
    search_products,
    to_json,
)

DIM = 1152


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


async def add_product(
    pool: asyncpg.Pool,
    pid: int,
    title: str,
    vector: np.ndarray | None,
    *,
    supplier: int = 7,
    state: str = "done",
    reason: str | None = None,
) -> None:
    await pool.execute(
        """INSERT INTO suppliers (supplier_id, name, store_name) VALUES ($1, 'Acme SAS', 'Acme')
           ON CONFLICT DO NOTHING""",
        supplier,
    )
    await pool.execute(
        """INSERT INTO products (product_id, title, supplier_id, sale_price, suggested_price,
                                 url_image_s3, last_seen_at, captured_at, content_hash)
           VALUES ($1, $2, $3, $4, $5, $6, now(), now(), '\\x00')""",
        pid,
        title,
        supplier,
        Decimal("45900.00"),
        Decimal("79900.50"),
        f"https://cdn.example/{pid}.jpg",
    )
    await pool.execute(
        """INSERT INTO embedding_jobs (product_id, image_url, state, reason, attempts,
                                       next_attempt_at)
           VALUES ($1, $2, $3, $4, 1,
                   CASE WHEN $3 = 'failed' THEN 'infinity'::timestamptz ELSE now() END)""",
        pid,
        f"https://cdn.example/{pid}.jpg",
        state,
        reason,
    )
    if vector is not None:
        await pool.execute(
            "INSERT INTO product_embeddings (product_id, embedding_visual) VALUES ($1, $2)",
            pid,
            vector,
        )


@pytest.fixture
async def catalog(pool: asyncpg.Pool) -> asyncpg.Pool:
    """Products 1-3 share one image; 4-30 are other images, 4 close to the shared one."""
    shared = unit(0)
    for pid in (1, 2, 3):
        await add_product(pool, pid, f"Lámpara LED {pid}", shared, supplier=pid)
    near = shared + 0.3 * unit(99)
    await add_product(pool, 4, "Lámpara parecida", near / np.linalg.norm(near))
    for pid in range(5, 31):
        await add_product(pool, pid, f"Otro producto {pid}", unit(pid))
    await add_product(pool, 40, "Pendiente", None, state="pending")
    await add_product(pool, 41, "Roto 100%_x", None, state="failed", reason="http_404")
    return pool


async def test_products_sharing_an_image_are_nearest_at_distance_zero(
    catalog: asyncpg.Pool,
) -> None:
    result = await find_similar(catalog, 1, 3)
    assert result.product.product_id == 1 and result.product.distance is None
    ids = [n.product_id for n in result.neighbours]
    assert ids == [2, 3, 4]  # itself excluded, identical images first, then the close one
    assert result.neighbours[0].distance == pytest.approx(0, abs=1e-5)
    assert 0.01 < (result.neighbours[2].distance or 0) < 0.2
    assert result.neighbours[0].store_name == "Acme" and result.neighbours[0].supplier_id == 2
    assert result.neighbours[0].sale_price == Decimal("45900.00")


async def test_k_larger_than_the_default_search_width_returns_k(catalog: asyncpg.Pool) -> None:
    result = await find_similar(catalog, 5, 29)
    assert len(result.neighbours) == 29
    distances = [n.distance for n in result.neighbours]
    assert distances == sorted(distances)  # type: ignore[type-var]
    assert 5 not in [n.product_id for n in result.neighbours]


async def test_a_missing_product_or_embedding_says_why(catalog: asyncpg.Pool) -> None:
    with pytest.raises(ProductNotFound, match="product 999 does not exist"):
        await find_similar(catalog, 999, 5)
    with pytest.raises(NoEmbedding, match="pending") as pending:
        await find_similar(catalog, 40, 5)
    assert pending.value.state == "pending"
    with pytest.raises(NoEmbedding, match=r"failed: http_404.*for good") as failed:
        await find_similar(catalog, 41, 5)
    assert (failed.value.state, failed.value.reason) == ("failed", "http_404")
    with pytest.raises(ValueError):
        await find_similar(catalog, 1, 0)


async def test_json_has_prices_as_decimal_strings_and_round_trips(catalog: asyncpg.Pool) -> None:
    data = to_json(await find_similar(catalog, 1, 2))
    again = json.loads(json.dumps(data))
    assert again["product"]["sale_price"] == "45900.00"
    assert again["product"]["suggested_price"] == "79900.50"
    assert "distance" not in again["product"]
    assert [n["product_id"] for n in again["neighbours"]] == [2, 3]
    assert isinstance(again["neighbours"][0]["distance"], float)


async def test_the_table_names_the_product_and_each_neighbour(catalog: asyncpg.Pool) -> None:
    text = render_table(await find_similar(catalog, 1, 3))
    assert "Look-alikes of 1: Lámpara LED 1" in text
    for needle in ("Lámpara LED 2", "Lámpara parecida", "Acme (2)", "45900.00", "79900.50"):
        assert needle in text


async def test_search_finds_by_title_or_id_and_tells_which_have_embeddings(
    catalog: asyncpg.Pool,
) -> None:
    found = await search_products(catalog, "lámpara", 10)
    assert [f["product_id"] for f in found] == [1, 2, 3, 4]
    assert all(f["has_embedding"] for f in found)
    by_id = await search_products(catalog, "40", 10)
    assert by_id[0]["product_id"] == 40 and by_id[0]["has_embedding"] is False
    # LIKE wildcards in the query are literal.
    assert [f["product_id"] for f in await search_products(catalog, "100%_", 10)] == [41]
    assert [f["product_id"] for f in await search_products(catalog, "%", 10)] == [41]
    # An empty query lists the products embedded most recently, each with its supplier.
    recent = await search_products(catalog, "  ", 10)
    assert recent and all(f["has_embedding"] for f in recent)
    embedded = await catalog.fetchval("SELECT count(*) FROM product_embeddings")
    assert len(recent) == min(10, embedded)
    assert all(f["supplier"] == f["supplier_name"] for f in recent)


async def test_the_answer_names_how_many_products_still_wait_for_an_embedding(
    catalog: asyncpg.Pool,
) -> None:
    await add_product(catalog, 42, "Reintentando", None, state="failed", reason="http_503")
    await catalog.execute(
        "UPDATE embedding_jobs SET next_attempt_at = now() + interval '1 hour'"
        " WHERE product_id = 42"
    )
    result = await find_similar(catalog, 1, 3)
    assert result.waiting == 2  # 40 pending, 42 retrying; 41 failed for good is not waiting
    assert to_json(result)["waiting"] == 2
    assert "2 products still wait for an embedding" in render_table(result)


async def test_a_product_still_waiting_says_how_many_wait(catalog: asyncpg.Pool) -> None:
    with pytest.raises(NoEmbedding, match=r"1 product\(s\) wait for one in all"):
        await find_similar(catalog, 40, 3)
