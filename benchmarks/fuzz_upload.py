"""Fuzz the upload path for a fixed time: image decoding and POST /api/search with the bytes.

Hypothesis draws arbitrary bytes, valid seeds (PNG in RGB, palette, RGBA and 16-bit, JPEG in RGB
and CMYK and with an EXIF rotation, animated GIF, TIFF, WebP, BMP) and seeds with byte-level
edits (see testkit/hostile.py). Each one goes to ``decode_image`` (which may only return an RGB
image or raise ValueError) and, as a multipart upload, to the tests' tiny service through the
Flask test client (which may only answer 2xx, or 4xx with a JSON error). Batches with fresh seeds
run until --seconds have passed; then it prints the examples tried, the status histogram and
every failure, and exits 1 if there was one.

    python -m benchmarks.fuzz_upload [--seconds 60] [--seed 0] [--threads 1] [--save-failures DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import faiss
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from PIL import Image

from retrieval.core.imaging import decode_image
from retrieval.service.server import create_app
from testkit.hostile import upload_bytes
from testkit.service import build_tiny_service

BATCH = 200


class Tally:
    def __init__(self) -> None:
        self.tried, self.sources, self.statuses, self.decoded = 0, Counter(), Counter(), Counter()
        self.failures: list[tuple[str, str, str, bytes]] = []  # (source, where, what, data)

    def fail(self, source: str, where: str, what: str, data: bytes) -> None:
        self.failures.append((source, where, what, data))


def fuzz_once(client, tally: Tally, source: str, data: bytes) -> None:
    """One input through decode_image and the upload route; failures are tallied, not raised."""
    tally.tried += 1
    tally.sources[source.split(" ")[0] if source.startswith("mutated") else source] += 1
    try:
        img = decode_image(data)
        ok = isinstance(img, Image.Image) and img.mode == "RGB"
        tally.decoded["RGB image" if ok else "wrong result"] += 1
        if not ok:
            tally.fail(source, "decode_image", f"returned {img!r}", data)
    except ValueError as e:
        tally.decoded["ValueError"] += 1
        if not str(e):
            tally.fail(source, "decode_image", "ValueError without a message", data)
    except Exception as e:  # noqa: BLE001 - any other exception is the finding
        tally.decoded[type(e).__name__] += 1
        tally.fail(source, "decode_image", f"{type(e).__name__}: {e}", data)
    resp = client.post(
        "/api/search", data={"image": (io.BytesIO(data), "q")}, content_type="multipart/form-data"
    )
    tally.statuses[resp.status_code] += 1
    body = resp.get_json(silent=True) if resp.is_json else None
    if resp.status_code >= 500:
        tally.fail(source, "/api/search", f"{resp.status_code}: {resp.data[:200]!r}", data)
    elif resp.status_code >= 400 and not (isinstance(body, dict) and str(body.get("error", "")).strip()):
        tally.fail(source, "/api/search", f"{resp.status_code} without a JSON error", data)


def run(client, seconds: float, first_seed: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(upload_bytes())
    def batch(upload: tuple[str, bytes]) -> None:
        if time.monotonic() < deadline:
            fuzz_once(client, tally, *upload)

    n = first_seed
    while time.monotonic() < deadline:
        seed(n)(batch)()
        n += 1
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first batch; batch i uses seed + i")
    ap.add_argument("--save-failures", type=Path, default=None, help="write each failing input here")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and FAISS threads; tiny single inputs gain nothing from more",
    )
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # PIL warns on nearly every corrupt input; failures are counted below
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        client = create_app(build_tiny_service(Path(tmp))).test_client()
        start = time.monotonic()
        tally = run(client, args.seconds, args.seed)
        elapsed = time.monotonic() - start
    print(f"examples tried: {tally.tried} in {elapsed:.0f} s ({tally.tried / elapsed:.0f}/s)")
    print("inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.sources.items())))
    print("decode_image: " + ", ".join(f"{k} {v}" for k, v in tally.decoded.most_common()))
    print(
        "/api/search status histogram: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items()))
    )
    for source, where, what, data in tally.failures[:20]:
        print(
            f"FAILURE {where} on {source} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}): "
            f"{what}"
        )
        if args.save_failures:
            args.save_failures.mkdir(parents=True, exist_ok=True)
            (args.save_failures / f"{hashlib.sha256(data).hexdigest()[:16]}.bin").write_bytes(data)
    print(f"failures: {len(tally.failures)} (5xx: {sum(v for k, v in tally.statuses.items() if k >= 500)})")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
