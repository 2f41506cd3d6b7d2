"""What one run of the pipeline shares between its steps: jobs, outcomes, identical photos.

`RunState` holds the queues, the jobs in flight and the groups of jobs waiting on a leader with
the same URL or bytes; each step (claims, downloads, inference, writes) is a mixin over it, and
`run.Run` joins them.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dahell.embedder import Embedder
from dahell.stages.base import Context

Vector = npt.NDArray[np.float32]

#: Results of this run kept to lend to later jobs with the same URL or bytes (~5 MB at 1152-d).
RECENT_RESULTS = 1024
#: Copies of embeddings written without inference, by why they could be reused.
SAME_URL, SAME_BYTES = "same_url", "same_bytes"


@dataclass(slots=True, eq=False)
class Job:
    product_id: int
    image_url: str | None
    attempts: int
    transient_failures: int = 0
    sha: bytes | None = None  # sha256 of the downloaded bytes, once known


@dataclass(slots=True)
class Outcome:
    """How one job ended in this run: a vector, a donor's vector to copy, or a failure reason.

    `reused` names why no inference ran for it (`same_url`, `same_bytes`), "" when it did.
    """

    job: Job
    vector: Vector | None = None
    donor: int | None = None
    reason: str = ""
    detail: str = ""
    reused: str = ""


@dataclass(slots=True, eq=False)
class _Group:
    """Jobs of this run waiting for the outcome of one leader with the same URL or bytes."""

    leader: Job
    kind: str  # SAME_URL or SAME_BYTES
    followers: list[Job] = field(default_factory=list)


def _follower_outcome(outcome: Outcome, job: Job, kind: str) -> Outcome:
    """The outcome a follower takes from its leader's: the same vector, donor or failure."""
    job.sha = job.sha or outcome.job.sha
    if outcome.vector is None and outcome.donor is None:
        return Outcome(job, reason=outcome.reason, detail=outcome.detail)
    return Outcome(job, vector=outcome.vector, donor=outcome.donor, reused=kind)


class RunState:
    """What the steps of one run share: its queues, thread pools, jobs in flight and groups."""

    def __init__(self, ctx: Context, embedder: Embedder, run_id: str) -> None:
        cfg = ctx.config.vectorizer
        self.ctx = ctx
        self.embedder = embedder
        self.run_id = run_id
        self.rng = random.Random()
        self.inflight: dict[int, Job] = {}
        self.dropped: set[int] = set()
        self.progress = asyncio.Event()
        self.download_q: asyncio.Queue[Job] = asyncio.Queue()
        self.infer_q: asyncio.Queue[tuple[Job, Vector]] = asyncio.Queue(2 * cfg.batch_size)
        self.write_q: asyncio.Queue[Outcome] = asyncio.Queue()
        self.prep_pool = ThreadPoolExecutor(cfg.preprocess_threads, "vectorizer-prep")
        self.model_pool = ThreadPoolExecutor(1, "vectorizer-model")
        self.capacity = max(2 * cfg.claim_batch_size, cfg.download_concurrency + 2 * cfg.batch_size)
        self._writing = False
        self.by_url: dict[str, _Group] = {}
        self.by_sha: dict[bytes, _Group] = {}
        # Results of this run by URL and by bytes, kept for a while after the leader's outcome
        # (its write may not have committed yet, so the database cannot lend it).
        self.recent: OrderedDict[str | bytes, Outcome] = OrderedDict()
        self.lookups: list[tuple[bytes, asyncio.Future[int | None]]] = []
        self.lookup_wake = asyncio.Event()

    # -- reuse: identical photos are embedded once

    @property
    def _dedup(self) -> bool:
        return self.ctx.config.vectorizer.dedup_images

    def _follow(self, groups: dict[Any, _Group], key: Any, job: Job, kind: str) -> bool:
        """Attach `job` to the group in flight for `key` (True), or make it the leader (False)."""
        if not self._dedup:
            return False
        group = groups.get(key)
        if group is None:
            groups[key] = _Group(job, kind)
            return False
        group.followers.append(job)
        return True

    def _recent(self, key: str | bytes, job: Job, kind: str) -> Outcome | None:
        """A copy of a recent result for the same URL or bytes, for `job`; None if none."""
        if not self._dedup or key not in self.recent:
            return None
        self.recent.move_to_end(key)
        return _follower_outcome(self.recent[key], job, kind)

    def _remember(self, outcome: Outcome) -> None:
        if outcome.vector is None and outcome.donor is None:
            return  # failures are not lent: a retry may succeed
        for key in (outcome.job.image_url, outcome.job.sha):
            if key is not None:
                self.recent[key] = outcome
                self.recent.move_to_end(key)
        while len(self.recent) > RECENT_RESULTS:
            self.recent.popitem(last=False)

    def _emit(self, outcome: Outcome) -> None:
        """Queue `outcome` for the writer, and its followers' outcomes with it."""
        self.write_q.put_nowait(outcome)
        if self._dedup:
            self._remember(outcome)
        for group in self._groups_led_by(outcome.job):
            for follower in group.followers:
                self._emit(_follower_outcome(outcome, follower, group.kind))

    def _drop(self, job: Job) -> None:
        """Stopping: `job` (and whoever waits on it) will not be finished in this run."""
        self.dropped.add(job.product_id)
        for group in self._groups_led_by(job):
            for follower in group.followers:
                self._drop(follower)

    def _groups_led_by(self, job: Job) -> list[_Group]:
        """Remove and return the groups `job` leads (its URL's, its bytes')."""
        led = []
        if job.image_url is not None and (g := self.by_url.get(job.image_url)) and g.leader is job:
            led.append(self.by_url.pop(job.image_url))
        if job.sha is not None and (g := self.by_sha.get(job.sha)) and g.leader is job:
            led.append(self.by_sha.pop(job.sha))
        return led
