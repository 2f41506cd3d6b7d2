"""Same-item groups: products whose photos are look-alikes, kept up to date as embeddings arrive.

Two products are *linked* when the cosine distance of their embeddings is at most
`research.same_item_distance`, or when their photo files are byte-identical
(`embedding_jobs.image_sha256`, known as soon as the vectorizer downloaded the bytes, before any
model runs). A group is a connected component of that relation; its id is the smallest
product_id among its members, so the grouping depends on membership alone and an incremental
upkeep gives the same ids as a full recomputation. Every embedded product has a row in
`research_groups` (a product alone is a group of one).

Upkeep (`upkeep_round`, run by the `groups` stage) is incremental, never all-pairs:

1. Work: embeddings whose `processed_at` moved past the `research_upkeep` watermark (minus
   `OVERLAP`, for transactions that committed late) and differ from what `research_groups`
   recorded; jobs with a new `image_sha256` and no embedding; rows whose embedding is gone.
2. A product that already had a group (its embedding changed, or vanished) leaves it first; what
   remains of its old group is re-split by neighbour expansion over those members only.
3. New links come from the HNSW index, `k` nearest per product (`ORDER BY embedding <=> v
   LIMIT k`, one LATERAL query per batch), filtered by distance, plus same-hash products; a
   union-find over the batch, its neighbours' existing groups and those links gives the new
   components, which take the smallest id of everything they joined.

The k-nearest cut means a product with more than k look-alikes links to the k nearest only;
the rest join through them (look-alikes are near each other), so k bounds work, not groups.
`recompute_all` rebuilds everything with the same link rule (the benchmark's baseline, and a
repair if the table is ever in doubt). Both hold an advisory lock, so several dahell processes
never interleave their writes.

Modules: `upkeep` (the incremental round), `rebuild` (`recompute_all`, the link rule),
`store` (the transaction, the links and the writes both share), `union_find`, `stats`.
"""

from __future__ import annotations

from dahell.research.groups.rebuild import ensure_rule, recompute_all, rule_text
from dahell.research.groups.stats import GroupStats, group_stats
from dahell.research.groups.store import DEFAULT_NEIGHBOURS, UpkeepResult
from dahell.research.groups.union_find import UnionFind
from dahell.research.groups.upkeep import upkeep_round

__all__ = [
    "DEFAULT_NEIGHBOURS",
    "GroupStats",
    "UnionFind",
    "UpkeepResult",
    "ensure_rule",
    "group_stats",
    "recompute_all",
    "rule_text",
    "upkeep_round",
]
