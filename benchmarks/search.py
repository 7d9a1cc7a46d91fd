"""Radius and k-NN query latency on random codes: the index kinds beside a numpy popcount scan.

Prints one line per (size, bits, method) with p50/p99 latency in ms, and the time to read the
codes once (the memory-bandwidth floor of any exact scan). The flat kind's range search is
hashveil's filtering kernel (retrieval.service.scan); FAISS's own ``IndexBinaryFlat.range_search``
on the same codes is timed beside it. Results of every kind are checked against the numpy scan on
each query. One thread throughout, as ``hashveil serve`` runs searches (one per request thread).
A last block prints the flat range search as a multiple of the read floor.

    python -m benchmarks.search [--sizes 25000 200000 1000000 10000000] [--queries 100] [--kinds flat]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from retrieval.service.index import KINDS, BinaryIndex


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


def faiss_range(db: np.ndarray, bits: int):
    """FAISS's own flat range search over the codes as the flat index stores them (zero-padded)."""
    width = {16: 4, 24: 4, 48: 8}.get(bits, bits // 8)
    pad = lambda c: np.pad(c, ((0, 0), (0, width - c.shape[1])))  # noqa: E731
    flat = faiss.IndexBinaryFlat(8 * width)
    flat.add(pad(db))
    return lambda q, radius: flat.range_search(pad(q), radius + 1)


def run_size(n: int, bits: int, args, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """Print the lines of one (size, bits); return (method, p50, best) of the radius searches."""
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
    search = faiss_range(db, bits)
    t_f, _ = timed(lambda q: search(q, args.radius), queries)
    print(
        f"{n:>9} {bits:>4} {'FAISS range r=' + str(args.radius):<22} "
        f"{np.percentile(t_f, 50):>8.3f} {np.percentile(t_f, 99):>8.3f}"
    )
    out = [
        ("read floor", floor, floor),
        ("FAISS range_search", float(np.percentile(t_f, 50)), float(t_f.min())),
    ]
    for kind in args.kinds:
        index = BinaryIndex.create(bits, kind)
        t = time.perf_counter()
        index.add(db, ids)
        build = time.perf_counter() - t
        index.range_search(queries[:1], args.radius)  # compiles the flat kernel once
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
        if kind == "flat":
            out.append(("flat (hashveil kernel)", float(np.percentile(t_r, 50)), float(t_r.min())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 200_000, 1_000_000, 10_000_000])
    ap.add_argument("--bits", type=int, nargs="+", default=[32, 48])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="index kinds to time")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'n':>9} {'bits':>4} {'method':<22} {'p50 ms':>8} {'p99 ms':>8}")
    largest = {}
    for bits in args.bits:
        for n in args.sizes:
            largest[bits] = (n, run_size(n, bits, args, rng))
    print(f"flat range search at radius {args.radius} against the read floor (goal of issue 15: <= 2x):")
    for bits, (n, figures) in largest.items():
        floor = figures[0][1]
        print(
            f"  {n:,} {bits}-bit codes: read floor {floor:.3f} ms; "
            + "; ".join(
                f"{name} p50 {ms:.3f} ms = {ms / floor:.2f}x (best {best:.3f} ms = {best / floor:.2f}x)"
                for name, ms, best in figures[1:]
            )
        )


if __name__ == "__main__":
    main()
