"""Load on the scaled-out service: N `hashveil serve` processes sharing one PostgreSQL store and one
Milvus standalone server, beside one server on FAISS + SQLite, all on this machine.

The set is a built one (default: the demo in var/, `make demo`): its model, its database codes
and its store rows are copied, unchanged, onto each backend pair in a temporary folder (a FAISS
file + SQLite; a Milvus collection + a PostgreSQL database), each with its own manifest, so
every server verifies what it serves exactly as after `hashveil build-index`. PostgreSQL
(testkit/postgres.py, here with fsync on) and Milvus (testkit/milvus.py, the PyPI package
`milvus`) run on loopback. Clients are threads with their own connections; client c talks to
server c mod N, as a round-robin reverse proxy would spread them. Each client loops on POST
/api/search (a share of image uploads, the rest code queries at radius 2) until the time is up.

Prints, per setup: requests/s, p50/p99 latency (all, uploads, codes), errors (non-2xx or
exceptions), the query-log rows the store gained against the searches answered, and the
machine's 1-minute load average at the end (other jobs on the machine disturb the timings).

    python -m benchmarks.scaleout [--config config.toml] [--servers 2] [--clients 32] [--duration 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests

from index_builder.backends import write_index
from retrieval.core.config import Config, load_config, override
from retrieval.service.manifest import MANIFEST_FILE, read_manifest, write_manifest
from retrieval.service.search import open_searcher
from retrieval.service.store import Store
from testkit import milvus, postgres
from testkit.data import write_config
from testkit.servers import free_port, start_serve, stop


@dataclass(frozen=True)
class Outcome:
    kind: str  # "image" or "code"
    seconds: float
    ok: bool


def copy_set(src: Config, work: Path, index: dict) -> Path:
    """``src``'s built set (model, codes, store rows) written onto the backends of ``index``
    (IndexConfig fields) in ``work``, with a manifest of its own; returns its config file."""
    searcher = open_searcher(src)  # verifies the source set first
    ids = np.sort(searcher.index.ids())
    rows = searcher.store.images(ids.tolist())
    labels = searcher.store.label_names()
    codes = np.stack([np.frombuffer(rows[int(i)].code, np.uint8) for i in ids])
    source = read_manifest(src.work_dir / "index" / MANIFEST_FILE)
    shutil.copytree(src.work_dir / "model", work / "model")
    cfg = override(src, paths={"work_dir": work}, index=index)
    written = write_index(cfg.index, work, source.hash_bits, codes, ids)
    store = Store(cfg.db_url)
    store.create()
    store.replace_images((rows[int(i)] for i in ids), labels)
    manifest = dataclasses.replace(
        source,
        **written.fields(),
        store_fingerprint=store.fingerprint(),
        db_url=cfg.db_url,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_manifest(work / "index" / MANIFEST_FILE, manifest)
    store.close()
    return write_config(work / "config.toml", cfg)


def client(
    urls: list[str], c: int, deadline: float, uploads: list[bytes], bits: int, share: float, out: list
):
    rng = random.Random(c)
    url = f"{urls[c % len(urls)]}/api/search"
    with requests.Session() as http:
        while time.monotonic() < deadline:
            kind = "image" if rng.random() < share else "code"
            t = time.perf_counter()
            try:
                if kind == "image":
                    r = http.post(
                        url, files={"image": ("q.png", rng.choice(uploads), "image/png")}, timeout=60
                    )
                else:
                    code = bytes(rng.randrange(256) for _ in range(bits // 8)).hex()
                    r = http.post(url, json={"code": code, "radius": 2}, timeout=60)
                ok = 200 <= r.status_code < 300
            except requests.RequestException:
                ok = False
            out.append(Outcome(kind, time.perf_counter() - t, ok))


def run_setup(name: str, config: Path, servers: int, threads: int, args, uploads: list[bytes]) -> str:
    """Start ``servers`` processes on ``config``, load them for args.duration seconds; one table row."""
    cfg = load_config(config)
    bits = read_manifest(cfg.work_dir / "index" / MANIFEST_FILE).hash_bits
    ports = [free_port() for _ in range(servers)]
    with ThreadPoolExecutor(servers) as pool:
        procs = list(pool.map(lambda p: start_serve(config, p, "--threads", str(threads)), ports))
    store = Store(cfg.db_url)
    try:
        before = store.query_log_count()
        out: list[Outcome] = []
        deadline = time.monotonic() + args.duration
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        workers = [
            threading.Thread(target=client, args=(urls, c, deadline, uploads, bits, args.image_share, out))
            for c in range(args.clients)
        ]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t
        logged = store.query_log_count() - before
    finally:
        for proc in procs:
            stop(proc)
        store.close()
    return _row(name, servers, threads, out, wall, logged)


def _row(name: str, servers: int, threads: int, out: list[Outcome], wall: float, logged: int) -> str:
    def pct(kind: str | None) -> str:
        ms = np.array([o.seconds * 1e3 for o in out if o.ok and kind in (None, o.kind)])
        return f"{np.percentile(ms, 50):.0f} / {np.percentile(ms, 99):.0f}" if ms.size else "- / -"

    answered = sum(o.ok for o in out)
    return (
        f"| {name} | {servers} x {threads} | {len(out) / wall:.1f} | {pct(None)} | {pct('image')} | "
        f"{pct('code')} | {len(out) - answered} | {logged} / {answered} | {os.getloadavg()[0]:.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="a config whose work_dir holds a built set"
    )
    ap.add_argument("--servers", type=int, default=2, help="search servers on PostgreSQL + Milvus")
    ap.add_argument("--threads", type=int, default=8, help="waitress threads per server")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per setup")
    ap.add_argument(
        "--image-share", type=float, default=0.5, help="fraction of requests that upload an image"
    )
    args = ap.parse_args()
    if not 1 <= args.servers <= 16 or not 1 <= args.clients <= 256 or not 0 < args.duration <= 600:
        ap.error("--servers in [1, 16], --clients in [1, 256], --duration in (0, 600]")
    src = load_config(args.config)
    searcher = open_searcher(src)
    some = searcher.store.images(np.sort(searcher.index.ids())[:64].tolist())
    uploads = [(searcher.image_root / row.path).read_bytes() for row in some.values()]
    pg, mv = postgres.start_server(durable=True), milvus.start_server()
    with tempfile.TemporaryDirectory(prefix="hashveil-scaleout-") as tmp:
        try:
            local = copy_set(src, Path(tmp) / "faiss", {"backend": "faiss", "kind": "flat", "db_url": ""})
            shared = copy_set(
                src,
                Path(tmp) / "shared",
                {"backend": "milvus", "milvus_uri": mv.uri, "db_url": pg.new_database("scaleout")},
            )
            print(
                f"set: {len(searcher.index.ids())} codes of {searcher.hash_bits} bits from {src.work_dir}; "
                f"{args.clients} clients, {args.duration:.0f} s per setup, {args.image_share:.0%} image uploads"
            )
            print(
                "| setup | servers x threads | req/s | p50 / p99 ms | uploads p50 / p99 | codes p50 / p99 "
                "| errors | log rows / answers | load avg |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            print(run_setup("FAISS + SQLite", local, 1, args.threads, args, uploads))
            print(run_setup("Milvus server + PostgreSQL", shared, 1, args.threads, args, uploads))
            print(run_setup("Milvus server + PostgreSQL", shared, args.servers, args.threads, args, uploads))
        finally:
            milvus.stop_server(mv)
            postgres.stop_server(pg)


if __name__ == "__main__":
    main()
