-- The schema contract the old dashboard reads (products, suppliers, warehouses, categories,
-- product_categories, product_stock_log, product_embeddings) plus dahell's own tables.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE suppliers (
    supplier_id   bigint PRIMARY KEY,
    name          text,
    store_name    text,
    plan_name     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE warehouses (
    warehouse_id  bigint PRIMARY KEY,
    name          text,
    city          text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);

CREATE TABLE categories (
    id   bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE products (
    product_id      bigint PRIMARY KEY,
    supplier_id     bigint,
    sku             text,
    title           text,
    description     text,
    sale_price      numeric(14, 2),
    suggested_price numeric(14, 2),
    profit_margin   numeric(14, 2) GENERATED ALWAYS AS (suggested_price - sale_price) STORED,
    product_type    text,
    url_image_s3    text,
    is_active       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL,
    raw_data        jsonb,
    -- dahell's own: capture time of the values in this row, and a hash of them, so that an
    -- older capture never overwrites a newer one and an unchanged sighting writes little.
    captured_at     timestamptz NOT NULL,
    content_hash    bytea NOT NULL
);
CREATE INDEX products_supplier_idx ON products (supplier_id);

-- No foreign keys on the loader's hot tables: per-row RI triggers cost more than the whole
-- upsert, and the loader writes parents before children in one transaction anyway.
CREATE TABLE product_categories (
    product_id  bigint NOT NULL,
    category_id bigint NOT NULL,
    PRIMARY KEY (product_id, category_id)
);

-- One row per variant of a VARIABLE product.
CREATE TABLE product_variations (
    variation_id    bigint PRIMARY KEY,
    product_id      bigint NOT NULL,
    sku             text,
    sale_price      numeric(14, 2),
    suggested_price numeric(14, 2),
    attributes      jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX product_variations_product_idx ON product_variations (product_id);

-- Latest stock per (product, variation, warehouse); variation_id 0 is the product's own stock
-- (SIMPLE) or the sum over its variations in that warehouse (VARIABLE).
CREATE TABLE product_stock (
    product_id   bigint NOT NULL,
    variation_id bigint NOT NULL DEFAULT 0,
    warehouse_id bigint NOT NULL,
    stock_qty    bigint NOT NULL,
    snapshot_at  timestamptz NOT NULL,
    PRIMARY KEY (product_id, variation_id, warehouse_id)
);

-- Contract table: product-level stock per warehouse, a row when first seen or changed.
CREATE TABLE product_stock_log (
    id           bigserial PRIMARY KEY,
    product_id   bigint NOT NULL,
    warehouse_id bigint NOT NULL,
    stock_qty    bigint NOT NULL,
    snapshot_at  timestamptz NOT NULL
);
CREATE INDEX product_stock_log_product_idx ON product_stock_log (product_id, warehouse_id, snapshot_at);

-- The same for each variation of a VARIABLE product.
CREATE TABLE variation_stock_log (
    id           bigserial PRIMARY KEY,
    product_id   bigint NOT NULL,
    variation_id bigint NOT NULL,
    warehouse_id bigint NOT NULL,
    stock_qty    bigint NOT NULL,
    snapshot_at  timestamptz NOT NULL
);
CREATE INDEX variation_stock_log_product_idx ON variation_stock_log (product_id, variation_id, warehouse_id, snapshot_at);

-- A row when a product's (variation_id 0) or a variation's prices are first seen or change.
CREATE TABLE price_history (
    id              bigserial PRIMARY KEY,
    product_id      bigint NOT NULL,
    variation_id    bigint NOT NULL DEFAULT 0,
    sale_price      numeric(14, 2),
    suggested_price numeric(14, 2),
    captured_at     timestamptz NOT NULL
);
CREATE INDEX price_history_product_idx ON price_history (product_id, variation_id, captured_at);

-- Contract table: one image embedding per product.
CREATE TABLE product_embeddings (
    product_id       bigint PRIMARY KEY REFERENCES products (product_id) ON DELETE CASCADE,
    embedding_visual vector(1152) NOT NULL,
    image_url        text,
    model_sha256     text,
    processed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX product_embeddings_visual_hnsw ON product_embeddings
    USING hnsw (embedding_visual vector_cosine_ops);

-- Work state of the vectorizer: what still needs an embedding lives here, not in memory.
CREATE TABLE embedding_jobs (
    product_id      bigint PRIMARY KEY,
    image_url       text,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    reason          text,
    detail          text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    claimed_by      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX embedding_jobs_ready_idx ON embedding_jobs (next_attempt_at)
    WHERE state IN ('pending', 'claimed');

-- Every input record that could not be loaded, with the reason and where it came from.
CREATE TABLE rejects (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,
    line_no     bigint,
    byte_offset bigint,
    reason      text NOT NULL,
    detail      text,
    raw_text    text,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejects_reason_idx ON rejects (reason);

-- How far each input file has been loaded, committed with the rows it produced.
CREATE TABLE load_checkpoints (
    source       text PRIMARY KEY,
    fingerprint  bytea NOT NULL,
    head_len     integer NOT NULL,
    byte_offset  bigint NOT NULL,
    line_no      bigint NOT NULL,
    lines_loaded bigint NOT NULL DEFAULT 0,
    lines_rejected bigint NOT NULL DEFAULT 0,
    completed    boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Lines by outcome, summed over every load (what `dahell status` reports as lines loaded).
CREATE TABLE load_totals (
    outcome text PRIMARY KEY,
    lines   bigint NOT NULL DEFAULT 0
);
