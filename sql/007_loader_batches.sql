-- Loader batches are numbered, so that a loader may keep the catalog rows it read and wrote
-- for its next batch (catalog_store.StateCache) instead of reading them again.
--
-- Each batch takes the next number under the loaders' lock (stages/loader/writer.py); its rows
-- are still true for the loader's next batch only when the number taken there follows it. Any
-- other write to the rows a batch starts from takes a number too, through the statement
-- triggers below: another loader's batch, a TRUNCATE or DELETE by hand, a restore. A loader's
-- own statements do not (it sets dahell.loader_batch for its transaction). Sequences are not
-- transactional: a rolled-back write still takes its number, which only costs a re-read.
CREATE SEQUENCE IF NOT EXISTS loader_batches;

CREATE OR REPLACE FUNCTION loader_batches_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('dahell.loader_batch', true) IS DISTINCT FROM 'on' THEN
        PERFORM nextval('loader_batches');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER products_loader_batches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON products FOR EACH STATEMENT EXECUTE FUNCTION loader_batches_bump();
CREATE TRIGGER product_stock_loader_batches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON product_stock FOR EACH STATEMENT EXECUTE FUNCTION loader_batches_bump();
CREATE TRIGGER product_variations_loader_batches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON product_variations FOR EACH STATEMENT EXECUTE FUNCTION loader_batches_bump();
CREATE TRIGGER product_categories_loader_batches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON product_categories FOR EACH STATEMENT EXECUTE FUNCTION loader_batches_bump();
CREATE TRIGGER warehouses_loader_batches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON warehouses FOR EACH STATEMENT EXECUTE FUNCTION loader_batches_bump();
-- The vectorizer moves jobs' states all the time; a batch reads only which URL a job is for.
CREATE TRIGGER embedding_jobs_loader_batches AFTER INSERT OR UPDATE OF image_url OR DELETE
    OR TRUNCATE ON embedding_jobs FOR EACH STATEMENT EXECUTE FUNCTION loader_batches_bump();
