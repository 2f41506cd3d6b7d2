"""The vectorizer stage: product images -> SigLIP embeddings in `product_embeddings`.

Work lives in `embedding_jobs` (invariant 3); a nudge from the loader only says "look now", and
the stage also looks every `vectorizer.poll_interval_s`. One run of the stage is a pipeline of
steps joined by bounded queues, so that the model never waits on the network:

    claimer --download_q--> downloaders (aiohttp, download_concurrency) + preprocess threads
            --infer_q--> one inference thread (batch_size) --write_q--> writer (one statement
            per batch) --> PostgreSQL

Rules for a row of `embedding_jobs` (the SQL in `leases`, `claims` and `writes` is the whole
truth):

- **Claim**: a short transaction of its own picks rows that are not done and whose
  `next_attempt_at` is due, useful first (`priority_at`, see `CLAIM_SQL`), `FOR UPDATE SKIP
  LOCKED`, below `max_attempts` (claims not ended by a transient failure); it sets
  `state='claimed'`, `claimed_by` (hostname:pid:run-uuid), `attempts + 1` and a lease:
  `lease_until = next_attempt_at = now() + lease_s`. A claimed row whose lease ran out is thus due
  again and is reclaimed by any worker (expired leases and due retries are one index scan). No
  transaction is held across downloads; leases of work still in flight are renewed every
  `lease_s / 3`.
- **Write**: the embedding is upserted and the job marked done in ONE statement per batch, only
  where the job is still claimed by this run AND its `image_url` is the one downloaded. A job
  reclaimed by another worker or whose image changed meanwhile is left alone (counted
  `discarded`); the loader's reset makes it pending again.
- **Reuse** (`vectorizer.dedup_images`, default on): identical photos are embedded once. After
  a claim, jobs whose `image_url` has an embedding from the current model (another product's done
  job with that URL) get a copy of that vector without a download (`reused`, `same_url`); jobs of
  this run with the same URL share one download. After a download, the bytes' sha256 is stored in
  `embedding_jobs.image_sha256` (for every downloaded job: embedded, reused or refused) and a done
  job with the same hash and model lends its vector (`reused`, `same_bytes`); images of this run
  with the same bytes share one inference. Copies are written by PostgreSQL from the donor's row
  (the vector never travels); a donor that vanished meanwhile releases the job (`discarded`,
  `donor_gone`).
- **Fail**: `state='failed'` with `reason` and `detail`. Transient failures (timeout,
  connection_error, http_5xx, http_408, http_429) are retried without limit after
  `retry_backoff_s * 2**(transient_failures-1)`, capped at `retry_backoff_max_s` (6 h by
  default), times a jitter in [0.8, 1.2]: a CDN outage of any length ends in retries, and
  `dahell status` shows how many wait and why. `transient_failures` counts them (the loader's new
  URL resets it); they never count toward `max_attempts`. `internal_error` (a dahell bug) is
  retried with the same backoff while `attempts - transient_failures < max_attempts`. The image's
  own faults (other 4xx such as 404/410, not_an_image, decode_error, too_large, too_many_pixels,
  host/scheme refused, invalid_url, no_image) fail for good at once: retrying a deterministic
  answer only costs traffic. "For good" is `next_attempt_at = 'infinity'`. A new image URL makes
  the loader reset the row (pending, attempts 0, next_attempt_at now()); to retry failures by
  hand: `UPDATE embedding_jobs SET state='pending', attempts=0, next_attempt_at=now() WHERE ...`.
- **Lost workers**: `vectorizer.max_attempts` bounds the claims that end without a transient
  failure: a row whose `attempts - transient_failures` reached `max_attempts` and whose last
  lease also expired is failed for good with `lease_expired` (an image that kills its worker must
  not kill every worker).
  When the stage is restarted in the same process it releases the claims of its previous run at
  once; on a graceful stop it releases what it did not finish (attempt refunded). A cancelled or
  killed worker releases nothing: its leases expire.
- **Idle**: a claim that finds nothing while nothing is in flight sets the stage idle; with
  `exit_when_idle`, the stage returns once no row is pending, claimed (by anyone) or failed with
  a retry due. Rows waiting for a future retry are not work.

Where each part lives: `stage` (the Stage: model, column, one `Run` per start), `run` (the
steps started and drained), `jobs` (what a run shares: jobs, outcomes, identical photos),
`leases` (who holds a row; renew, release, sweep), `claims`, `downloads`, `inference`,
`writes` (and the retry policy), `column` (the vector column's dimension).
"""

from __future__ import annotations

from dahell.stages.vectorizer.claims import CLAIM_SQL, RANK_SQL
from dahell.stages.vectorizer.column import (
    embedding_column_dimension,
    ensure_embedding_dimension,
)
from dahell.stages.vectorizer.leases import worker_id
from dahell.stages.vectorizer.stage import VectorizerStage
from dahell.stages.vectorizer.writes import backoff_seconds, is_transient, retry_kind

__all__ = [
    "CLAIM_SQL",
    "RANK_SQL",
    "VectorizerStage",
    "backoff_seconds",
    "embedding_column_dimension",
    "ensure_embedding_dimension",
    "is_transient",
    "retry_kind",
    "worker_id",
]
