"""Disjoint sets over product ids: the connected components that make same-item groups."""

from __future__ import annotations

from collections.abc import Iterable


class UnionFind:
    """Disjoint sets over product ids; each set's representative is its smallest id."""

    def __init__(self, items: Iterable[int] = ()) -> None:
        self.parent: dict[int, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: int) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: int) -> int:
        self.add(item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = min(ra, rb), max(ra, rb)
            self.parent[high] = low

    def groups(self) -> dict[int, int]:
        """item -> smallest item of its set."""
        return {item: self.find(item) for item in self.parent}
