"""The labels of every indexed item, in memory: a page's labels and a whole result's label votes
without a database round trip.

A search answers one page of hits and the label histogram of its whole result (thousands of
items at a wide radius), on every request. Items share few distinct label sets (10 on
Fashion-MNIST, a few thousand on multi-label sets), so the table keeps one small integer per item,
the index of its label set, beside the sorted ids (or no ids at all when they are a dense range,
as ``build-index`` assigns them): 2 bytes an item, 20 MB at 10M items. It is read from the store
once, when the searcher opens; the manifest pins that store's contents.
"""

from __future__ import annotations

import json

import numpy as np

from retrieval.service.store import Store


class LabelTable:
    """Item id -> label set; label votes of many ids at once.

    Args:
        ids: (n,) int64 item ids, ascending and unique.
        set_of: (n,) index into ``sets`` of each item's label set.
        sets: the distinct label sets, each a tuple of names.
    """

    def __init__(self, ids: np.ndarray, set_of: np.ndarray, sets: list[tuple[str, ...]]) -> None:
        if ids.shape != set_of.shape or (ids.size and np.any(np.diff(ids) <= 0)):
            raise ValueError("ids must be ascending and unique, one label set index each")
        dense = ids.size > 0 and int(ids[-1]) - int(ids[0]) + 1 == ids.size
        self._base = int(ids[0]) if dense else None
        self._ids = None if dense else ids
        self._set_of = set_of.astype(np.uint16 if len(sets) <= 2**16 else np.uint32)
        self.sets = sets
        self._lists = [list(s) for s in sets]  # what a hit's JSON carries
        names = sorted({name for s in sets for name in s})
        self._names = names
        member = np.zeros((len(sets), len(names)), np.int64)
        for i, s in enumerate(sets):
            for name in set(s):
                member[i, names.index(name)] = 1
        self._member = member

    @classmethod
    def load(cls, store: Store) -> "LabelTable":
        """Every stored image's label set, read once in id order."""
        index: dict[str, int] = {}
        ids, set_of = [], []
        for page_ids, texts in store.label_sets():
            ids.append(page_ids)
            set_of.append(np.array([index.setdefault(t, len(index)) for t in texts], np.int64))
        sets = [tuple(json.loads(t)) for t in index]
        if not ids:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64), sets)
        return cls(np.concatenate(ids), np.concatenate(set_of), sets)

    def __len__(self) -> int:
        return int(self._set_of.size)

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids``; RuntimeError naming ids the table does not hold (index and store differ)."""
        ids = np.asarray(ids, np.int64)
        if self._ids is None:
            pos = ids - (self._base or 0)
            bad = (pos < 0) | (pos >= self._set_of.size)
        else:
            pos = np.minimum(np.searchsorted(self._ids, ids), max(self._ids.size - 1, 0))
            bad = self._ids[pos] != ids if self._ids.size else np.ones(ids.shape, bool)
        if bad.any():
            raise RuntimeError(f"index ids {ids[bad][:5].tolist()} are not in the store; rebuild the index")
        return pos

    def labels(self, ids: np.ndarray) -> list[list[str]]:
        """Each id's label names (shared lists: do not modify them)."""
        lists = self._lists
        return [lists[i] for i in self._set_of[self._positions(ids)].tolist()]

    def votes(self, ids: np.ndarray) -> dict[str, int]:
        """Votes per label over ``ids``, each item voting once for each of its labels, sorted by name:
        retrieval.core.votes.label_votes of their label sets."""
        counts = np.bincount(self._set_of[self._positions(ids)], minlength=len(self.sets))
        per_label = counts @ self._member
        return {name: int(n) for name, n in zip(self._names, per_label.tolist()) if n}
