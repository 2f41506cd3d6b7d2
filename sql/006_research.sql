-- The read side (issue 13): same-item groups kept by the `groups` stage, and the indexes the
-- research queries need. Adds tables and indexes only: no contract table or column changes.

-- One row per product that belongs to a same-item group (every embedded product; a product
-- alone is a group of one). group_id is the smallest product_id of the group's members, so the
-- grouping is a function of membership alone: an incremental upkeep and a full recomputation
-- give the same ids.
CREATE TABLE research_groups (
    product_id    bigint PRIMARY KEY,
    group_id      bigint NOT NULL,
    -- product_embeddings.processed_at of the embedding this placement used (NULL: placed by a
    -- byte-identical photo before any embedding); a different value means "place it again".
    embedded_at   timestamptz,
    image_sha256  bytea,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX research_groups_group_idx ON research_groups (group_id);
CREATE INDEX research_groups_sha_idx ON research_groups (image_sha256)
    WHERE image_sha256 IS NOT NULL;

-- Watermarks and counters of the upkeep, one row per name.
CREATE TABLE research_upkeep (
    name        text PRIMARY KEY,
    watermark   timestamptz,
    -- the link rule the groups were built with, e.g. "distance=0.06": another one means rebuild
    value       text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Per product sales for the windows ending at the newest capture, refreshed by the groups stage
-- (research.sales.refresh_summary). Used to rank by sales only while it is exact: its
-- research_upkeep row ('sales') records the capture time and the stock history's last ids it
-- was computed from; any newer row means the ranking is computed live instead.
CREATE TABLE research_sales_summary (
    product_id  bigint PRIMARY KEY,
    units_7d    bigint NOT NULL,
    units_30d   bigint NOT NULL,
    first_seen  timestamptz NOT NULL
);

-- Finding new embeddings since the watermark without scanning the table.
CREATE INDEX IF NOT EXISTS product_embeddings_processed_idx
    ON product_embeddings (processed_at);
-- The sales windows read the stock history by time.
CREATE INDEX IF NOT EXISTS product_stock_log_snapshot_idx ON product_stock_log (snapshot_at);
CREATE INDEX IF NOT EXISTS variation_stock_log_snapshot_idx ON variation_stock_log (snapshot_at);
-- Filters of the research page: category and city.
CREATE INDEX IF NOT EXISTS product_categories_category_idx ON product_categories (category_id);
