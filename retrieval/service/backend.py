"""The search contract of every index backend (FAISS in ``index``, Milvus in ``milvus_index``).

A backend supplies two primitives on validated input; this module turns them into the public,
checked searches, so every backend answers alike (inclusive radius, ties broken by id).
"""

from __future__ import annotations

import numbers

import numpy as np

from retrieval.core.codes import as_codes

Results = list[tuple[np.ndarray, np.ndarray]]  # per query: (ids int64, distances int64)


class HammingSearch:
    """The public search contract of every backend, on two primitives a backend supplies.

    ``_range(codes, radius)``: exact inclusive range search on validated codes, each list sorted
    by (distance, id); ``_kth_distances(codes, k)``: each query's k-th nearest distance. k-NN is
    an exact range search at that distance cut to k, so ties go to smaller ids on every backend.
    Subclasses set ``hash_bits`` and provide ``ntotal`` and ``ids()``.
    """

    hash_bits: int

    @property
    def ntotal(self) -> int:
        raise NotImplementedError

    def range_search(self, codes: np.ndarray, radius: int) -> Results:
        """Items within Hamming distance ``radius`` (inclusive) of each query, nearest first."""
        codes = self._check_codes(codes)
        radius = self._check_radius(radius)
        return self._range(codes, radius)

    def knn(self, codes: np.ndarray, k: int) -> Results:
        """The min(k, ntotal) nearest items of each query, ties broken by smaller id."""
        codes = self._check_codes(codes)
        check_int("k", k, 1, 2**31 - 1)
        k = min(int(k), self.ntotal)
        if k == 0:
            empty = (np.empty(0, np.int64), np.empty(0, np.int64))
            return [empty for _ in range(codes.shape[0])]
        kth = self._kth_distances(codes, k)
        out: Results = [None] * codes.shape[0]  # type: ignore[list-item]
        for r in np.unique(kth):  # one exact range search per distinct k-th distance
            rows = np.flatnonzero(kth == r)
            for row, (ids, dist) in zip(rows, self._range(codes[rows], int(r))):
                out[row] = (ids[:k], dist[:k])
        return out

    def search(self, codes: np.ndarray, radius: int, k: int | None = None) -> Results:
        """Inclusive-radius results, cut to the k nearest (ties by id) when k is given."""
        results = self.range_search(codes, radius)
        if k is None:
            return results
        check_int("k", k, 1, 2**31 - 1)
        return [(ids[:k], dist[:k]) for ids, dist in results]

    def ids(self) -> np.ndarray:
        raise NotImplementedError

    def _check_new(self, codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated codes and int64 ids for add(): one new, unique id per code."""
        codes = self._check_codes(codes)
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.shape[0] != codes.shape[0] or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"ids must be a 1-D integer array of length {codes.shape[0]}; "
                f"got dtype {ids.dtype}, shape {ids.shape}"
            )
        ids = ids.astype(np.int64)
        if np.unique(ids).size != ids.size:
            raise ValueError("ids must be unique; got duplicates")
        clash = np.intersect1d(ids, self.ids())
        if clash.size:
            raise ValueError(f"ids already in the index: {clash[:5].tolist()}")
        return codes, ids

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = as_codes(codes)
        if codes.shape[1] * 8 != self.hash_bits:
            raise ValueError(
                f"codes must have {self.hash_bits // 8} bytes per row for "
                f"{self.hash_bits}-bit codes; got shape {codes.shape}"
            )
        return codes

    def _check_radius(self, radius: int) -> int:
        check_int("radius", radius, 0, self.hash_bits)
        return int(radius)

    def _range(self, codes: np.ndarray, radius: int) -> Results:
        raise NotImplementedError

    def _kth_distances(self, codes: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def _kth_by_widening(self, codes: np.ndarray, k: int) -> np.ndarray:
        """Each query's k-th distance (k <= ntotal) from exact range searches of a doubling radius,
        for backends without a k-NN of their own that ties can be trusted to. Shape: (n,) int64."""
        kth = np.empty(codes.shape[0], dtype=np.int64)
        for i in range(codes.shape[0]):
            radius = 0
            while True:  # widen until k items are in; radius K holds everything
                found = self._range(codes[i : i + 1], radius)[0][1]
                if found.size >= k or radius == self.hash_bits:
                    kth[i] = found[k - 1]
                    break
                radius = min(self.hash_bits, max(1, 2 * radius))
        return kth


def check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}]; got {value!r}")
