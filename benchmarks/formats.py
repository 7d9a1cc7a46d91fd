"""Protected files people can share: how big each format is, and whether the protection survives it.

Needs the default demo (`hashveil demo --no-serve`). Protects the demo's query images and a natural
photo (matplotlib's bundled grace_hopper.jpg, 512x600, once per target label) with the default
settings (semantic mode, P2S anchor of a random other label), writes each protected image as PNG,
JPEG and WebP the way `hashveil protect --format` does (privacy.encode), decodes and hashes every
file as the server would, and prints per format: the share of files whose code is still the target,
the median file size and its ratio to the input file.

    python -m benchmarks.formats [--queries 100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.cbook
import numpy as np
import torch
from tqdm import tqdm

from hashveil.local import local_protector
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.encode import Encoding, encode_verified
from retrieval.core.config import load_config
from retrieval.core.imaging import load_image, to_tensor

ENCODINGS = [Encoding("png")] + [Encoding(f, q) for f in ("jpeg", "webp") for q in (95, 90, 75)]


def measure(protector, sources: list[tuple[bytes, torch.Tensor, str | None]]) -> dict:
    """Per encoding: (at target?, file bytes, input bytes) of each protected source."""
    rows: dict[Encoding, list[tuple[bool, int, int]]] = {e: [] for e in ENCODINGS}
    reached = 0
    for raw, x, label in tqdm(sources, desc="protect and encode", unit="image"):
        p = protector.protect(x, "semantic", target_label=label)
        reached += p.distance == 0
        for enc in ENCODINGS:
            out = encode_verified(protector.model, p.image, p.target_code, p.distance, enc)
            rows[enc].append((out.at_target, len(out.data), len(raw)))
    return {"rows": rows, "reached": reached, "n": len(sources)}


def report(title: str, result: dict) -> None:
    print(f"{title}: {result['n']} protections, {result['reached']} reached the target as pixels")
    print(f"  {'format':<18} {'file at target':>14} {'median bytes':>12} {'x input':>8}")
    for enc, rows in result["rows"].items():
        ok = np.array([r[0] for r in rows])
        size = np.median([r[1] for r in rows])
        ratio = np.median([r[1] / r[2] for r in rows])
        print(f"  {enc.describe():<18} {ok.mean():>14.1%} {size:>12.0f} {ratio:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.toml")
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.config)
    protector = local_protector(cfg.work_dir / "model", cfg.db_url, cfg.privacy, "cpu")
    images = open_dataset(cfg.data, cfg.work_dir, protector.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    demo = []
    for i in splits.query[: args.queries]:
        path = images.root / images.paths[int(i)]
        demo.append((path.read_bytes(), to_tensor(load_image(path)), None))
    report(f"demo query images ({images.root.name})", measure(protector, demo))
    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    x = to_tensor(load_image(photo))
    usable = [l for l, c in protector.label_counts.items() if c >= cfg.privacy.n_anchor]
    sources = [(photo.read_bytes(), x, label) for label in usable]
    report(
        f"{photo.name} ({x.shape[2]}x{x.shape[1]}, {photo.stat().st_size} bytes), every target label",
        measure(protector, sources),
    )


if __name__ == "__main__":
    main()
