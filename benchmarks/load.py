"""Concurrent load on a real server: image uploads and code queries, 1 client and N clients each.

Starts ``hashveil serve`` (waitress, in its own process) on the set of ``--config`` (default: the
repository's config.toml, i.e. the default demo index in var/; ``--tiny`` builds a tiny set in a
temporary folder instead). The uploads are database images whose result at the default radius
holds about ``--hits`` items (asked of the server first); code queries send those images' codes
(paging through such a result costs that); random codes have results of a few items (as the load
table of issue 15 measured code queries). Every answer is the default page. Six phases of
``--duration`` seconds: each kind by 1 client, then by N clients. Each client keeps one HTTP/1.1
connection and sends pre-built request bodies, so that the load client costs the shared CPU as
little as it can.

Prints per phase: requests, errors, requests/s, p50/p99 latency, the query-log rows the store gained
against the searches answered (each must be committed before its answer), and the N-client figures
as ratios of the 1-client ones of the same run, beside the goals of issue 15.

    python -m benchmarks.load [--config config.toml | --tiny] [--clients 32] [--duration 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.core.config import load_config, override
from retrieval.service.manifest import MANIFEST_FILE, read_manifest
from retrieval.service.store import Store
from testkit.data import make_folder_dataset, tiny_config, write_config
from testkit.servers import free_port, start_serve, stop

ROOT = Path(__file__).resolve().parents[1]
MAX_CLIENTS = 256
CANDIDATES = 200  # database images asked for their result size
SAMPLES = 64  # uploads used, those whose result size is nearest --hits


@dataclass(frozen=True)
class Phase:
    kind: str
    clients: int
    requests: int
    errors: list[str]
    seconds: float
    latencies_ms: np.ndarray  # of the answered requests
    logged: int  # query-log rows gained

    @property
    def rate(self) -> float:
        return self.latencies_ms.size / self.seconds

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")


def tiny_set(root: Path) -> Path:
    """testkit's generated colour images, small_cnn trained for one epoch, the index built; its config."""
    from index_builder.build import build_index
    from index_builder.dpsh import train

    cfg = override(tiny_config(root / "work", make_folder_dataset(root / "data")), train={"epochs": 1})
    train(cfg)
    build_index(cfg)
    return write_config(root / "config.toml", cfg)


def multipart(image: bytes) -> tuple[bytes, dict[str, str]]:
    """A POST /api/search body uploading ``image``, built once."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn.request("POST", "/api/search", body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def pick_uploads(port: int, store: Store, image_root: Path, ids: list[int], hits: int) -> list[bytes]:
    """The SAMPLES candidate images whose result size at the default radius is nearest ``hits``."""
    rows = store.images(ids)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sized = []
    for i in sorted(rows):
        image = (image_root / rows[i].path).read_bytes()
        body, headers = multipart(image)
        status, data = post(conn, body, headers)
        if status != 200:
            raise RuntimeError(f"probe upload of image {i} got HTTP {status}: {data[:200]!r}")
        answer = json.loads(data)
        sized.append((abs(answer["count"] - hits), answer["count"], answer["code"], image))
    conn.close()
    sized.sort(key=lambda s: s[0])
    return sized[:SAMPLES]


def request_bodies(picked: list, hash_bits: int) -> dict[str, list[tuple[bytes, dict[str, str]]]]:
    """Pre-built POST bodies of each kind of request."""
    as_json = {"Content-Type": "application/json"}
    rng = np.random.default_rng(0)
    random_codes = [rng.integers(0, 256, hash_bits // 8, np.uint8).tobytes().hex() for _ in range(256)]
    return {
        "image uploads": [multipart(s[3]) for s in picked],
        "code queries": [(json.dumps({"code": s[2]}).encode(), as_json) for s in picked],
        "random codes": [(json.dumps({"code": c}).encode(), as_json) for c in random_codes],
    }


def client(port: int, bodies: list, seed: int, deadline: float, out: list, errors: list) -> None:
    """One client: one keep-alive connection, seeded picks of pre-built bodies, until the deadline."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        body, headers = rng.choice(bodies)
        t = time.perf_counter()
        try:
            status, data = post(conn, body, headers)
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        if status == 200:
            out.append(time.perf_counter() - t)
        else:
            errors.append(f"HTTP {status}: {data[:200]!r}")
    conn.close()


def run_phase(kind: str, port: int, clients: int, duration: float, bodies: list, store: Store) -> Phase:
    done: list[float] = []  # list.append is atomic under the GIL
    errors: list[str] = []
    before = store.query_log_count()
    deadline = time.monotonic() + duration
    workers = [
        threading.Thread(target=client, args=(port, bodies, c, deadline, done, errors))
        for c in range(clients)
    ]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t
    logged = store.query_log_count() - before
    return Phase(kind, clients, len(done) + len(errors), errors, seconds, np.array(done) * 1e3, logged)


def report(phases: list[Phase], retention_days: int) -> None:
    print("| load | requests | errors | requests/s | p50 ms | p99 ms | log rows / answers | vs 1 client |")
    print("|---|---|---|---|---|---|---|---|")
    single = {p.kind: p for p in phases if p.clients == 1}
    for p in phases:
        base = single[p.kind]
        ratio = (
            f"{p.rate / base.rate:.0%} of the rate, p99 {p.p(99) / base.p(99):.1f}x" if p.clients > 1 else ""
        )
        rows = f"{p.logged:,} / {p.latencies_ms.size if retention_days else 0:,}"
        print(
            f"| {p.clients} client{'s' if p.clients > 1 else ''}, {p.kind} | {p.requests:,} | {len(p.errors)} | "
            f"{p.rate:,.0f} | {p.p(50):.1f} | {p.p(99):.1f} | {rows} | {ratio} |"
        )
    for p in phases:
        for message in list(dict.fromkeys(p.errors))[:3]:
            print(f"error ({p.clients} clients, {p.kind}): {message}")
    up1, upn = single["image uploads"], [p for p in phases if p.kind == "image uploads" and p.clients > 1]
    print("goals (issue 15):")
    print(f"  1 client upload p50 <= 20 ms: {up1.p(50):.1f} ms")
    for p in upn:
        print(
            f"  {p.clients} clients uploads >= 100 requests/s, p99 <= 600 ms, 0 errors, log rows == answers: "
            f"{p.rate:.0f}/s, p99 {p.p(99):.0f} ms, {len(p.errors)} errors, {p.logged} rows for "
            f"{p.latencies_ms.size} answers"
        )
    for p in phases:
        if p.kind != "image uploads" and p.clients > 1:
            print(
                f"  {p.clients} clients {p.kind} >= 90 % of 1 client's rate, p99 <= 100 ms: "
                f"{p.rate / single[p.kind].rate:.0%}, p99 {p.p(99):.0f} ms"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config", type=Path, default=ROOT / "config.toml", help="a config whose work_dir holds a built set"
    )
    ap.add_argument("--tiny", action="store_true", help="build and serve a tiny set instead (a quick check)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per phase")
    ap.add_argument(
        "--threads", type=int, default=16, help="waitress worker threads (hashveil serve --threads)"
    )
    ap.add_argument("--hits", type=int, default=2000, help="result size of the uploads to pick")
    args = ap.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= 3600:
        ap.error(f"--clients must be in [1, {MAX_CLIENTS}] and --duration in (0, 3600]")
    with tempfile.TemporaryDirectory(prefix="hashveil-load-") as tmp:
        config = tiny_set(Path(tmp)) if args.tiny else args.config
        cfg = load_config(config)
        manifest = read_manifest(cfg.work_dir / "index" / MANIFEST_FILE)
        store = Store(manifest.db_url)
        candidates = sample_ids(store, CANDIDATES)
        port = free_port()
        server = start_serve(config, port, "--threads", str(args.threads), log_path=Path(tmp) / "server.log")
        try:
            picked = pick_uploads(port, store, Path(manifest.image_root), candidates, args.hits)
            counts = [s[1] for s in picked]
            print(
                f"{manifest.count:,} items, {manifest.hash_bits} bits, radius {cfg.server.radius}; {len(picked)} "
                f"uploads with {min(counts):,} to {max(counts):,} items in radius (median "
                f"{int(np.median(counts)):,}), default page ({min(cfg.server.page_size, cfg.server.max_k)} hits); "
                f"waitress {args.threads} threads, {args.duration:g} s per phase"
            )
            phases = [
                run_phase(kind, port, clients, args.duration, bodies, store)
                for kind, bodies in request_bodies(picked, manifest.hash_bits).items()
                for clients in (1, args.clients)
            ]
        finally:
            stop(server)
        report(phases, cfg.server.log_retention_days)


def sample_ids(store: Store, n: int) -> list[int]:
    """n database ids spread over the store (every k-th in id order)."""
    ids = np.concatenate([page for page, _ in store.label_sets()])
    return ids[:: max(1, len(ids) // n)][:n].tolist()


if __name__ == "__main__":
    main()
