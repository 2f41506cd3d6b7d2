-- The vectorizer's claim query walks one index: every row that is not done, by the time it may
-- be (re)tried. A claimed row's next_attempt_at is its lease end (kept equal to lease_until), so
-- expired leases, due retries and new work are all "next_attempt_at <= now()" in this index.
-- A failure that will not be retried has next_attempt_at = 'infinity'.
DROP INDEX IF EXISTS embedding_jobs_ready_idx;
CREATE INDEX embedding_jobs_due_idx ON embedding_jobs (next_attempt_at) WHERE state <> 'done';
