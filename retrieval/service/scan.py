"""The flat index's range search: an exact popcount scan that filters first, compiled with numba.

FAISS's ``IndexBinaryFlat.range_search`` streams the codes once but pays for its result
handler on every code; at 10M 32-bit codes and radius 2 it takes ~3.7x the time to read the
codes. This kernel reads them in blocks of ``BLOCK`` words and computes each block's smallest
distance first (a branch-free loop that LLVM vectorises, with the CPU's popcount); only a block
whose minimum is within the radius is scanned again to collect its rows, which at a small radius
is almost none. It is exact: every code is compared, and tests/test_backends.py checks it against
a brute-force scan at every code length.

Codes are 4- or 8-byte words (the flat index stores 16/24-bit codes padded to 32 and 48-bit codes
to 64, see retrieval.service.index). The kernels release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import intrinsic

BLOCK = 1024  # words per filtered block: 4-8 KiB, well inside L1
WORD_DTYPES = {4: np.dtype("<u4"), 8: np.dtype("<u8")}


@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop on an unsigned word: the popcnt instruction, vectorised where the CPU has it."""

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)

    return x(x), codegen


@njit(nogil=True, cache=True)
def _block_min(block, q):
    m = _popcount(block[0] ^ q)
    for j in range(1, block.shape[0]):
        d = _popcount(block[j] ^ q)
        m = d if d < m else m
    return m


@njit(nogil=True, cache=True)
def _scan(words, q, radius, out):
    """Rows of ``words`` within ``radius`` of ``q`` into ``out``, ascending; returns how many."""
    k = 0
    for start in range(0, words.shape[0], BLOCK):
        block = words[start : start + BLOCK]
        if _block_min(block, q) <= radius:
            for j in range(block.shape[0]):
                if _popcount(block[j] ^ q) <= radius:
                    out[k] = start + j
                    k += 1
    return k


def range_rows(words: np.ndarray, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows within Hamming ``radius`` (inclusive) of one query, and their distances, rows ascending.

    Shape: words (n,) uint32 or uint64 (one code per word, as the index stores it), query (1,)
    of the same dtype -> rows (m,) int64, distances (m,) int64.
    """
    if words.dtype not in WORD_DTYPES.values() or query.dtype != words.dtype or query.shape != (1,):
        raise TypeError(f"expected uint32/uint64 words and one query word; got {words.dtype}, {query.dtype}")
    if words.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    q = query[0]
    out = np.empty(words.shape[0], np.int64)  # untouched pages cost nothing
    k = _scan(words, q, words.dtype.type(radius), out)
    rows = out[:k].copy()
    return rows, np.bitwise_count(words[rows] ^ q).astype(np.int64)
