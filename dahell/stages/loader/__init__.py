"""The loader: input lines into the catalog tables, each loaded or rejected with a reason, once.

Usable two ways: `Loader.load_path()` imports a file (`python -m dahell load`), and
`LoaderStage` runs inside the daemon, replaying the journal at start-up and then consuming the
scraper's `JournalBatch` messages.

Exactly once: a file's byte offset (and a fingerprint of its head) is committed in the same
transaction as the rows its lines produced, under an advisory lock; the next load resumes there
(where it may resume, and which files are replaced or finished: `dahell.sources`).
One bad line never costs its neighbours: parse failures are rejected one by one, and a batch the
database refuses is split until the refused rows are isolated (`db_error:<sqlstate>`). Only a
line's own content rejects it: any other error (memory, disk, connection) leaves the batch
uncommitted, to be tried again. Counts: each physical line ends once, loaded or rejected; the
products it held are counted apart (`LoadStats`).

Modules: `chunks` (reading a source into parsed chunks), `writer` (one chunk, one transaction:
writing and ordering), `files` (the `Loader`: where each source resumes, files and journal
ranges), `stats` (counts and reports), `retention` (journal compression and deletion), `stage`
(the daemon's stage). What callers import is re-exported here.
"""

from __future__ import annotations

from dahell.journal import open_source
from dahell.stages.loader.files import GC_THRESHOLDS, Loader, ProgressCallback, relax_gc
from dahell.stages.loader.retention import apply_retention
from dahell.stages.loader.stage import LoaderStage
from dahell.stages.loader.stats import LOADED, SUMMARY_COUNTS, FileReport, LoadStats
from dahell.stages.loader.writer import DATA_ERROR_CLASSES, LOADER_LOCK_KEY, BatchWriter, SourceBusy

#: Smaller sources are parsed in the loader's own thread: starting workers would cost more.
#: (Read here at call time, with `open_source`: tests patch both on this package.)
PARALLEL_PARSE_MIN_BYTES = 8 * 1024 * 1024

__all__ = [
    "DATA_ERROR_CLASSES",
    "GC_THRESHOLDS",
    "LOADED",
    "LOADER_LOCK_KEY",
    "PARALLEL_PARSE_MIN_BYTES",
    "SUMMARY_COUNTS",
    "BatchWriter",
    "FileReport",
    "LoadStats",
    "Loader",
    "LoaderStage",
    "ProgressCallback",
    "SourceBusy",
    "apply_retention",
    "open_source",
    "relax_gc",
]
