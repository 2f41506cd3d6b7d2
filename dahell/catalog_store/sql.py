"""The catalog store's SQL: staging tables, the one read a batch starts from, one merge per
table. Prices travel as text and are cast by PostgreSQL (asyncpg's binary `numeric` encoder
costs ~2 µs a value).
"""

from __future__ import annotations

OUTCOMES = ("inserted", "updated", "unchanged")

#: The session's staging tables (created once per connection; emptied at each commit).
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_products (
    product_id bigint, supplier_id bigint, sku text, title text, description text,
    sale_price text, suggested_price text, product_type text, url_image_s3 text,
    last_seen_at timestamptz, raw_data jsonb, captured_at timestamptz, content_hash bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_variations (
    variation_id bigint, product_id bigint, sku text, sale_price text,
    suggested_price text, attributes jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_prices (
    product_id bigint, variation_id bigint, sale_price text, suggested_price text,
    captured_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_stock (
    product_id bigint, variation_id bigint, warehouse_id bigint, stock_qty bigint,
    snapshot_at timestamptz
) ON COMMIT DELETE ROWS;
"""

_CLEAR_STAGING = "TRUNCATE stage_products, stage_variations, stage_stock, stage_prices"

_PRODUCT_COLUMNS = (
    "product_id",
    "supplier_id",
    "sku",
    "title",
    "description",
    "sale_price",
    "suggested_price",
    "product_type",
    "url_image_s3",
    "last_seen_at",
    "raw_data",
    "captured_at",
    "content_hash",
)

_UPSERT_PRODUCTS = """
INSERT INTO products AS p (product_id, supplier_id, sku, title, description, sale_price,
    suggested_price, product_type, url_image_s3, last_seen_at, raw_data, captured_at, content_hash)
SELECT product_id, supplier_id, sku, title, description, sale_price::numeric,
    suggested_price::numeric, product_type, url_image_s3, last_seen_at, raw_data, captured_at,
    content_hash
FROM stage_products
ON CONFLICT (product_id) DO UPDATE SET
    supplier_id = excluded.supplier_id, sku = excluded.sku, title = excluded.title,
    description = excluded.description, sale_price = excluded.sale_price,
    suggested_price = excluded.suggested_price, product_type = excluded.product_type,
    url_image_s3 = excluded.url_image_s3, raw_data = excluded.raw_data,
    captured_at = excluded.captured_at, content_hash = excluded.content_hash,
    last_seen_at = GREATEST(p.last_seen_at, excluded.last_seen_at),
    is_active = true, updated_at = now()
WHERE p.captured_at <= excluded.captured_at
  AND (p.content_hash IS DISTINCT FROM excluded.content_hash
       OR p.captured_at < excluded.captured_at)
"""

# Everything a batch starts from, in one round trip: one row shape for all (kind, ids, stock,
# hash, two times, two texts, two prices), `kind` indexing `_READERS`. Stock and variation
# prices are looked up for the products that exist only (most of a first load's are new);
# category links and embedding jobs for all, as a row left by a deleted product still counts.
# (`ARRAY(SELECT unnest(...))` hides the list's length from the planner, which otherwise chose
# a full scan of product_categories for a few thousand ids.)
_READ_STATE = """
WITH p AS MATERIALIZED (
    SELECT product_id, content_hash, last_seen_at, captured_at, url_image_s3, sale_price,
        suggested_price
    FROM products WHERE product_id = ANY($1::bigint[])
)
SELECT 0, product_id, NULL::bigint, NULL::bigint, NULL::bigint, content_hash, last_seen_at,
    captured_at, url_image_s3, NULL::text, sale_price, suggested_price
FROM p
UNION ALL
SELECT 1, product_id, variation_id, warehouse_id, stock_qty, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL
FROM product_stock WHERE product_id = ANY(ARRAY(SELECT product_id FROM p))
UNION ALL
SELECT 2, product_id, variation_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, sale_price,
    suggested_price
FROM product_variations WHERE product_id = ANY(ARRAY(SELECT product_id FROM p))
UNION ALL
SELECT 3, pc.product_id, NULL, NULL, NULL, NULL, NULL, NULL, c.name, NULL, NULL, NULL
FROM product_categories AS pc JOIN categories AS c ON c.id = pc.category_id
WHERE pc.product_id = ANY(ARRAY(SELECT unnest($1::bigint[])))
UNION ALL
SELECT 4, product_id, NULL, NULL, NULL, NULL, NULL, NULL, image_url, NULL, NULL, NULL
FROM embedding_jobs WHERE product_id = ANY($1::bigint[])
UNION ALL
SELECT 5, warehouse_id, NULL, NULL, NULL, NULL, first_seen_at, last_seen_at, name, city, NULL,
    NULL
FROM warehouses WHERE warehouse_id = ANY($2::bigint[])
"""

_TOUCH_PRODUCTS = """
UPDATE products AS p SET last_seen_at = v.seen
FROM unnest($1::bigint[], $2::timestamptz[]) AS v(product_id, seen)
WHERE p.product_id = v.product_id AND p.last_seen_at < v.seen
"""

# A supplier's values are those of its newest capture (ties: the later line): an older line
# changes nothing, whichever product it comes with.
_UPSERT_SUPPLIERS = """
INSERT INTO suppliers AS s (supplier_id, name, store_name, plan_name, captured_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT (supplier_id) DO UPDATE SET
    name = excluded.name, store_name = excluded.store_name, plan_name = excluded.plan_name,
    captured_at = excluded.captured_at,
    updated_at = CASE WHEN (s.name, s.store_name, s.plan_name)
        IS DISTINCT FROM (excluded.name, excluded.store_name, excluded.plan_name)
        THEN now() ELSE s.updated_at END
WHERE (s.captured_at IS NULL OR s.captured_at <= excluded.captured_at)
  AND ((s.name, s.store_name, s.plan_name, s.captured_at)
    IS DISTINCT FROM (excluded.name, excluded.store_name, excluded.plan_name, excluded.captured_at))
"""

# The values come from `_fold_warehouses`, which started from the rows read in this
# transaction (under the loader's lock): they replace the row as they are.
_UPSERT_WAREHOUSES = """
INSERT INTO warehouses AS w (warehouse_id, name, city, first_seen_at, last_seen_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[])
ON CONFLICT (warehouse_id) DO UPDATE SET
    name = excluded.name, city = excluded.city, first_seen_at = excluded.first_seen_at,
    last_seen_at = excluded.last_seen_at
WHERE (w.name, w.city, w.first_seen_at, w.last_seen_at)
    IS DISTINCT FROM (excluded.name, excluded.city, excluded.first_seen_at, excluded.last_seen_at)
"""

# New names only, in the order the lines first gave them: a category's id then depends on
# neither the batch boundaries nor names already known (a conflict would still use an id).
_INSERT_CATEGORIES = """
INSERT INTO categories (name)
SELECT v.name FROM unnest($1::text[]) WITH ORDINALITY AS v(name, n)
WHERE NOT EXISTS (SELECT 1 FROM categories c WHERE c.name = v.name)
ORDER BY v.n
ON CONFLICT (name) DO NOTHING
"""

_UPSERT_VARIATIONS = """
INSERT INTO product_variations AS v (variation_id, product_id, sku, sale_price,
    suggested_price, attributes)
SELECT variation_id, product_id, sku, sale_price::numeric, suggested_price::numeric, attributes
FROM stage_variations
ON CONFLICT (variation_id) DO UPDATE SET
    product_id = excluded.product_id, sku = excluded.sku, sale_price = excluded.sale_price,
    suggested_price = excluded.suggested_price, attributes = excluded.attributes,
    updated_at = now()
WHERE (v.product_id, v.sku, v.sale_price, v.suggested_price, v.attributes)
    IS DISTINCT FROM (excluded.product_id, excluded.sku, excluded.sale_price,
                      excluded.suggested_price, excluded.attributes)
"""

_UPSERT_STOCK = """
INSERT INTO product_stock AS s (product_id, variation_id, warehouse_id, stock_qty, snapshot_at)
SELECT product_id, variation_id, warehouse_id, stock_qty, snapshot_at FROM stage_stock
ON CONFLICT (product_id, variation_id, warehouse_id) DO UPDATE SET
    stock_qty = excluded.stock_qty, snapshot_at = excluded.snapshot_at
WHERE s.snapshot_at <= excluded.snapshot_at
"""

_INSERT_PRICES = """
INSERT INTO price_history (product_id, variation_id, sale_price, suggested_price, captured_at)
SELECT product_id, variation_id, sale_price::numeric, suggested_price::numeric, captured_at
FROM stage_prices
"""

# Only for products whose job `_fold_images` found with another URL at some point in the batch.
_PENDING_EMBEDDINGS = """
INSERT INTO embedding_jobs AS j (product_id, image_url, state)
SELECT id, url, 'pending' FROM unnest($1::bigint[], $2::text[]) AS v(id, url)
ON CONFLICT (product_id) DO UPDATE SET
    image_url = excluded.image_url, state = 'pending', attempts = 0, reason = NULL,
    detail = NULL, next_attempt_at = now(), lease_until = NULL, claimed_by = NULL,
    updated_at = now()
"""
