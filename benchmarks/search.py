"""Radius and k-NN query latency on random codes: FAISS index kinds beside a numpy popcount scan.

Prints one line per (size, bits, method) with p50/p99 latency in ms, and the time to read the
codes once (the memory-bandwidth floor of any exact scan). Results of every FAISS kind are
checked against the numpy scan on each query.

    python benchmarks/search.py [--sizes 25000 200000 1000000 10000000] [--queries 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from retrieval.service.index import BinaryIndex


def numpy_range(db: np.ndarray, q: np.ndarray, radius: int) -> np.ndarray:
    dist = np.bitwise_count(np.bitwise_xor(db, q)).sum(axis=1, dtype=np.int32)
    hits = np.flatnonzero(dist <= radius)
    return hits[np.lexsort((hits, dist[hits]))]


def timed(fn, queries: np.ndarray) -> tuple[np.ndarray, list]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q.reshape(1, -1)))
        times.append((time.perf_counter() - t) * 1e3)
    return np.array(times), out


def read_floor(db: np.ndarray, repeats: int = 5) -> float:
    """ms to stream the codes once (a reduction over every byte), best of ``repeats``."""
    words = db.reshape(-1).view(np.uint8)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.bitwise_or.reduce(words[: len(words) // 8 * 8].view(np.uint64))
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 200_000, 1_000_000, 10_000_000])
    ap.add_argument("--bits", type=int, nargs="+", default=[32, 48])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'n':>9} {'bits':>4} {'method':<22} {'p50 ms':>8} {'p99 ms':>8}")
    for bits in args.bits:
        for n in args.sizes:
            db = rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
            ids = np.arange(n, dtype=np.int64)
            # queries near database items, so radius queries have answers
            queries = db[rng.integers(0, n, args.queries)].copy()
            flips = rng.integers(0, bits, args.queries)
            queries[np.arange(args.queries), flips // 8] ^= (1 << (7 - flips % 8)).astype(np.uint8)
            floor = read_floor(db)
            t_np, ref = timed(lambda q: numpy_range(db, q, args.radius), queries)
            print(f"{n:>9} {bits:>4} {'read codes once':<22} {floor:>8.3f} {'':>8}")
            print(
                f"{n:>9} {bits:>4} {'numpy popcount r=' + str(args.radius):<22} "
                f"{np.percentile(t_np, 50):>8.3f} {np.percentile(t_np, 99):>8.3f}"
            )
            for kind in ("flat", "hash", "multihash"):
                index = BinaryIndex.create(bits, kind)
                t = time.perf_counter()
                index.add(db, ids)
                build = time.perf_counter() - t
                t_r, got = timed(lambda q: index.range_search(q, args.radius)[0][0], queries)
                mismatches = sum(not np.array_equal(g, r) for g, r in zip(got, ref))
                t_k, _ = timed(lambda q: index.knn(q, args.k), queries)
                print(
                    f"{n:>9} {bits:>4} {kind + ' r=' + str(args.radius):<22} {np.percentile(t_r, 50):>8.3f} "
                    f"{np.percentile(t_r, 99):>8.3f}   build {build:.2f} s, mismatches {mismatches}"
                )
                print(
                    f"{n:>9} {bits:>4} {kind + ' knn k=' + str(args.k):<22} {np.percentile(t_k, 50):>8.3f} "
                    f"{np.percentile(t_k, 99):>8.3f}"
                )


if __name__ == "__main__":
    main()
