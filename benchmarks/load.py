"""Concurrent load on a real server: N clients on loopback mixing image uploads and code queries.

Starts ``hashveil serve`` (waitress, in its own process) on the set of ``--config``, or on a tiny
set built in a temporary folder (generated colour images, small_cnn trained for one epoch).
Every client loops on POST /api/search until the time is up. Prints throughput, p50/p99 latency
per kind, errors (non-2xx or exceptions) and query-log rows lost: the rows the server's store
gained against the searches answered 2xx, each of which must have been logged first.

    python benchmarks/load.py [--config config.toml] [--clients 32] [--duration 30] [--threads 8]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from retrieval.core.codes import to_hex
from retrieval.core.config import load_config, override
from retrieval.service.index import BinaryIndex
from retrieval.service.manifest import MANIFEST_FILE, read_manifest
from retrieval.service.store import Store
from testkit.data import make_folder_dataset, tiny_config, write_config
from testkit.servers import free_port, start_serve, stop

MAX_CLIENTS = 256
KINDS = ("image", "code")


@dataclass(frozen=True)
class Outcome:
    kind: str
    seconds: float
    error: str | None  # None for a 2xx answer


def tiny_set(root: Path) -> Path:
    """testkit's generated colour images, small_cnn trained for one epoch, the index built; its config file."""
    from index_builder.build import build_index
    from index_builder.dpsh import train

    cfg = override(tiny_config(root / "work", make_folder_dataset(root / "data")), train={"epochs": 1})
    train(cfg)
    build_index(cfg)
    return write_config(root / "config.toml", cfg)


def sample_uploads(store: Store, image_root: Path, ids: list[int], n: int = 64) -> list[bytes]:
    rows = store.images(ids[:n])
    return [(image_root / rows[i].path).read_bytes() for i in sorted(rows)]


def client(
    url: str,
    seed: int,
    deadline: float,
    uploads: list[bytes],
    hash_bits: int,
    image_share: float,
    out: list[Outcome],
) -> None:
    """One client: its own connection, a seeded mix of kinds, until the deadline."""
    rng = random.Random(seed)
    with requests.Session() as http:
        while time.monotonic() < deadline:
            kind = "image" if rng.random() < image_share else "code"
            t = time.perf_counter()
            try:
                if kind == "image":
                    r = http.post(
                        url, files={"image": ("q.png", rng.choice(uploads), "image/png")}, timeout=60
                    )
                else:
                    code = np.array([[rng.randrange(256) for _ in range(hash_bits // 8)]], np.uint8)
                    r = http.post(url, json={"code": to_hex(code[0]), "radius": 2}, timeout=60)
                error = None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                error = f"{type(e).__name__}: {e}"
            out.append(Outcome(kind, time.perf_counter() - t, error))


def run_load(
    url: str, clients: int, duration: float, uploads: list[bytes], hash_bits: int, image_share: float
) -> tuple[list[Outcome], float]:
    out: list[Outcome] = []  # list.append is atomic under the GIL
    deadline = time.monotonic() + duration
    workers = [
        threading.Thread(target=client, args=(url, c, deadline, uploads, hash_bits, image_share, out))
        for c in range(clients)
    ]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out, time.perf_counter() - t


def report(out: list[Outcome], wall: float, clients: int, logged: int, retention_days: int) -> None:
    ok = [o for o in out if o.error is None]
    errors = Counter(o.error.split(":")[0] for o in out if o.error is not None)
    print(f"{'kind':<6} {'requests':>8} {'ok':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in KINDS:
        ms = np.array([o.seconds * 1e3 for o in ok if o.kind == kind])
        n = sum(o.kind == kind for o in out)
        p50, p99 = (np.percentile(ms, 50), np.percentile(ms, 99)) if ms.size else (float("nan"),) * 2
        print(f"{kind:<6} {n:>8} {ms.size:>8} {p50:>8.1f} {p99:>8.1f}")
    for message in list(dict.fromkeys(o.error for o in out if o.error))[:5]:
        print("error:", message)
    expected = len(ok) if retention_days > 0 else 0
    lost, extra = max(0, expected - logged), max(0, logged - expected)
    print(
        f"load: {clients} clients, {wall:.1f} s, {len(out)} requests, {len(out) / wall:.1f} req/s, "
        f"errors {sum(errors.values())} {dict(errors)}, log rows +{logged} for {expected} logged searches: "
        f"lost {lost}, extra {extra}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config", type=Path, help="a config whose work_dir holds a built set (default: a tiny set)"
    )
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    ap.add_argument(
        "--image-share", type=float, default=0.5, help="fraction of requests that upload an image"
    )
    args = ap.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS:
        ap.error(f"--clients must be in [1, {MAX_CLIENTS}]; got {args.clients}")
    if not 0 < args.duration <= 3600 or not 0 <= args.image_share <= 1:
        ap.error(
            f"--duration must be in (0, 3600] and --image-share in [0, 1]; got {args.duration}, "
            f"{args.image_share}"
        )
    with tempfile.TemporaryDirectory(prefix="hashveil-load-") as tmp:
        config = args.config or tiny_set(Path(tmp))
        cfg = load_config(config)
        manifest = read_manifest(cfg.work_dir / "index" / MANIFEST_FILE)
        store = Store(manifest.db_url)
        ids = BinaryIndex.load(manifest.index_path(cfg.work_dir / "index")).ids().tolist()
        uploads = sample_uploads(store, Path(manifest.image_root), ids)
        port = free_port()
        server = start_serve(config, port, "--threads", str(args.threads), log_path=Path(tmp) / "server.log")
        try:
            before = store.query_log_count()  # after the server's start-up prune
            out, wall = run_load(
                f"http://127.0.0.1:{port}/api/search",
                args.clients,
                args.duration,
                uploads,
                manifest.hash_bits,
                args.image_share,
            )
            logged = store.query_log_count() - before
        finally:
            stop(server)
        report(out, wall, args.clients, logged, cfg.server.log_retention_days)


if __name__ == "__main__":
    main()
