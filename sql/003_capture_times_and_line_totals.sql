-- The capture time of a supplier's name, store and plan, so that an older line (for a product
-- not loaded yet) never overwrites what a newer line said. NULL: loaded before this column
-- existed; any capture may replace it. Warehouses need no column: their name and city follow
-- the sighting at last_seen_at, which already records the newest capture.
ALTER TABLE suppliers ADD COLUMN IF NOT EXISTS captured_at timestamptz;
