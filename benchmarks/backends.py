"""Index backends side by side on the same random codes: FAISS (flat, hash, multihash), Milvus Lite
and, with ``--backends ... milvus-server``, a Milvus standalone server.

Prints one line per backend: build time (create + add, and for Milvus the flush a build ends
with), radius-query latency p50/p99 in ms (one query per call), and whether every result set
(ids and distances, in order) is identical to FAISS's flat scan. Milvus Lite runs in process (a
file in a temporary folder); the server is testkit/milvus.py's (the PyPI package `milvus`, on
loopback, over gRPC).

    python -m benchmarks.backends [--n 1000000] [--bits 32] [--queries 100] [--radius 2]
        [--backends faiss-flat faiss-hash faiss-multihash milvus-lite milvus-server]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieval.service.index import BinaryIndex
from testkit import milvus


def timed(index, queries: np.ndarray, radius: int) -> tuple[np.ndarray, list]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(index.range_search(q.reshape(1, -1), radius)[0])
        times.append((time.perf_counter() - t) * 1e3)
    return np.array(times), out


def same(a: list, b: list) -> bool:
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def make_backend(name: str, bits: int, folder: Path, server_uri: str = ""):
    if name.startswith("milvus-"):
        from retrieval.service.milvus_index import MilvusIndex

        uri = server_uri if name == "milvus-server" else str(folder / "bench.db")
        return MilvusIndex.create(uri, "bench", bits, replace=True)
    return BinaryIndex.create(bits, name.removeprefix("faiss-"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument(
        "--backends", nargs="+", default=["faiss-flat", "faiss-hash", "faiss-multihash", "milvus-lite"]
    )
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, size=(args.n, args.bits // 8), dtype=np.uint8)
    ids = np.arange(args.n, dtype=np.int64)
    # queries near database items (one bit flipped), so radius queries have answers
    queries = db[rng.integers(0, args.n, args.queries)].copy()
    flips = rng.integers(0, args.bits, args.queries)
    queries[np.arange(args.queries), flips // 8] ^= (1 << (7 - flips % 8)).astype(np.uint8)

    reference = BinaryIndex.create(args.bits, "flat")
    reference.add(db, ids)
    _, ref = timed(reference, queries, args.radius)
    hits = np.array([len(r[0]) for r in ref])
    print(
        f"n={args.n} bits={args.bits} queries={args.queries} radius={args.radius} "
        f"(hits per query: mean {hits.mean():.1f}, max {hits.max()})"
    )
    print(f"{'backend':<16} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8}  identical to flat scan")
    server = milvus.start_server() if "milvus-server" in args.backends else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.backends:
                measure(name, args, db, ids, queries, ref, Path(tmp), server.uri if server else "")
    finally:
        if server is not None:
            milvus.stop_server(server)


def measure(name: str, args, db, ids, queries, ref, folder: Path, server_uri: str) -> None:
    """Build one backend, time its radius queries, compare with the flat scan; prints one line."""
    t = time.perf_counter()
    index = make_backend(name, args.bits, folder, server_uri)
    index.add(db, ids)
    if hasattr(index, "flush"):
        index.flush()
    build = time.perf_counter() - t
    t_r, got = timed(index, queries, args.radius)
    print(
        f"{name:<16} {build:>8.2f} {np.percentile(t_r, 50):>8.3f} {np.percentile(t_r, 99):>8.3f}  "
        f"{'yes' if same(got, ref) else 'NO'} ({sum(not same([g], [r]) for g, r in zip(got, ref))} "
        f"of {len(ref)} differ)"
    )
    if hasattr(index, "close"):
        index.close()


if __name__ == "__main__":
    main()
