-- Identical photos embedded once, useful work first, transient failures retried without limit.
--
-- image_sha256: sha256 of the downloaded image bytes, set on every job whose bytes were
-- downloaded (embedded, reused or refused after download). Same bytes = same item, before any
-- model runs: the vectorizer copies the vector of a done job with the same hash (and the same
-- model) instead of running inference, and the research side unions products through it.
ALTER TABLE embedding_jobs ADD COLUMN IF NOT EXISTS image_sha256 bytea;
CREATE INDEX IF NOT EXISTS embedding_jobs_image_sha256_idx ON embedding_jobs (image_sha256)
    WHERE image_sha256 IS NOT NULL;
-- The same URL is not downloaded twice: a claimed job finds an embedding of its URL here.
-- Hash, not btree: a URL may be longer than a btree entry allows.
CREATE INDEX IF NOT EXISTS product_embeddings_image_url_idx ON product_embeddings
    USING hash (image_url);

-- Consecutive transient failures (network, timeout, 5xx, 408, 429) of the current image: the
-- backoff's exponent. They never count toward vectorizer.max_attempts (`attempts` is refunded),
-- so a CDN outage of any length ends in retries, not in failures for good.
ALTER TABLE embedding_jobs ADD COLUMN IF NOT EXISTS transient_failures integer NOT NULL DEFAULT 0;

-- The claim order ("useful first"). priority_at = next_attempt_at - bonus for pending rows,
-- next_attempt_at for every other state (claimed: the lease end; failed: the retry time). The
-- bonus is bounded (at most 24 hours, see embedding_priority_bonus), so a job that has waited
-- longer than that goes before any job queued after it: nothing starves. Since the bonus is
-- never negative, "next_attempt_at <= now()" implies "priority_at <= now()": the claim walks
-- embedding_jobs_priority_idx from its start and stops at now().
--
-- A row that becomes pending gets priority_at NULL from the trigger below (cheap: the loader
-- queues thousands at once), and the vectorizer ranks such rows in batches before it claims
-- (embedding_jobs_unranked_idx finds them); a NULL priority is never claimed.
ALTER TABLE embedding_jobs ADD COLUMN IF NOT EXISTS priority_at timestamptz;

-- In stock (any warehouse, product level): 12 h. Captured (changed) within the last day: 6 h.
-- No embedding yet (a new product, not a re-embed): 6 h.
CREATE OR REPLACE FUNCTION embedding_priority_bonus(pid bigint) RETURNS interval
LANGUAGE sql STABLE AS $$
SELECT CASE WHEN EXISTS (SELECT 1 FROM product_stock AS s
                         WHERE s.product_id = pid AND s.variation_id = 0 AND s.stock_qty > 0)
            THEN interval '12 hours' ELSE interval '0' END
     + CASE WHEN EXISTS (SELECT 1 FROM products AS p
                         WHERE p.product_id = pid AND p.captured_at > now() - interval '1 day')
            THEN interval '6 hours' ELSE interval '0' END
     + CASE WHEN NOT EXISTS (SELECT 1 FROM product_embeddings AS e WHERE e.product_id = pid)
            THEN interval '6 hours' ELSE interval '0' END
$$;

-- Keeps priority_at (and transient_failures for a new image) right whoever writes the row: the
-- loader's reset, the vectorizer's claim, write, release and renewal, or a hand-written UPDATE.
-- No lookups here: a row that becomes pending (or whose due time or image moves while pending)
-- is left unranked (NULL) for the vectorizer's batched ranking.
CREATE OR REPLACE FUNCTION embedding_jobs_priority() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.image_url IS DISTINCT FROM OLD.image_url THEN
        NEW.transient_failures := 0;
    END IF;
    IF NEW.state <> 'pending' THEN
        NEW.priority_at := NEW.next_attempt_at;
    ELSIF TG_OP = 'INSERT' OR OLD.state <> 'pending'
          OR NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at
          OR NEW.image_url IS DISTINCT FROM OLD.image_url THEN
        NEW.priority_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS embedding_jobs_priority_trg ON embedding_jobs;
CREATE TRIGGER embedding_jobs_priority_trg BEFORE INSERT OR UPDATE ON embedding_jobs
    FOR EACH ROW EXECUTE FUNCTION embedding_jobs_priority();

ALTER TABLE embedding_jobs DISABLE TRIGGER embedding_jobs_priority_trg;
UPDATE embedding_jobs SET priority_at = CASE
    WHEN state = 'pending' THEN next_attempt_at - embedding_priority_bonus(product_id)
    ELSE next_attempt_at END;
ALTER TABLE embedding_jobs ENABLE TRIGGER embedding_jobs_priority_trg;

CREATE INDEX IF NOT EXISTS embedding_jobs_priority_idx ON embedding_jobs (priority_at)
    WHERE state <> 'done';
CREATE INDEX IF NOT EXISTS embedding_jobs_unranked_idx ON embedding_jobs (product_id)
    WHERE priority_at IS NULL AND state <> 'done';
