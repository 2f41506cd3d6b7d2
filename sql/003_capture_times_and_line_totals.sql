-- The capture time of a supplier's name, store and plan, so that an older line (for a product
-- not loaded yet) never overwrites what a newer line said. NULL: loaded before this column
-- existed; any capture may replace it. Warehouses need no column: their name and city follow
-- the sighting at last_seen_at, which already records the newest capture.
ALTER TABLE suppliers ADD COLUMN IF NOT EXISTS captured_at timestamptz;

-- load_totals: `lines` now counts physical lines by line outcome ('loaded', 'rejected') and
-- `products` the products they held by product outcome ('inserted', 'updated', 'unchanged',
-- 'rejected'). Until now `lines` counted products (a whole API response on one line counted once
-- per product): those counts move to `products`, and stand in for the lines loaded before.
ALTER TABLE load_totals ADD COLUMN IF NOT EXISTS products bigint NOT NULL DEFAULT 0;
UPDATE load_totals SET products = lines;
UPDATE load_totals SET lines = 0 WHERE outcome IN ('inserted', 'updated', 'unchanged');
INSERT INTO load_totals (outcome, lines)
SELECT 'loaded', sum(products) FROM load_totals
WHERE outcome IN ('inserted', 'updated', 'unchanged')
HAVING sum(products) > 0
ON CONFLICT (outcome) DO NOTHING;

-- The file's size and mtime when its checkpoint was saved: a file loaded to its end and
-- unchanged since is skipped on a stat alone (an idle rescan never decompresses a finished .gz).
ALTER TABLE load_checkpoints ADD COLUMN IF NOT EXISTS file_size bigint;
ALTER TABLE load_checkpoints ADD COLUMN IF NOT EXISTS file_mtime_ns bigint;
