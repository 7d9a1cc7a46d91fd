"""Codes to search and the brute-force answer to compare every backend with."""

from __future__ import annotations

import numpy as np

from retrieval.core.codes import hamming


def clustered_codes(bits: int, n: int, seed: int) -> np.ndarray:
    """Codes in a few tight clusters plus exact duplicates: every small radius has hits, edges and
    ties. Shape: (n, bits / 8) uint8."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (5, bits), dtype=np.uint8)
    flips = rng.random((n, bits)) < rng.choice([0.0, 0.03, 0.1, 0.3], size=(n, 1))
    return np.packbits(centres[rng.integers(0, 5, n)] ^ flips, axis=1)


def brute(query: np.ndarray, db: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every stored item as (ids, distances) sorted by (distance, id), independently of any backend."""
    d = hamming(query[None], db)[0]
    order = np.lexsort((ids, d))
    return ids[order], d[order]


def scattered_ids(n: int, seed: int, start: int = 10, step: int = 3) -> np.ndarray:
    """n distinct int64 ids in a shuffled order (insertion order must not matter)."""
    return np.random.default_rng(seed).permutation(np.arange(start, start + step * n, step)).astype(np.int64)
