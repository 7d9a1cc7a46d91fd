"""Hashing throughput of the index builder beside the backbone's raw forward throughput.

The builder reads PNGs through a DataLoader and hashes them through the whole model; the raw
figure runs the same model on the same images already decoded in memory. The loader should not
be the bottleneck (goal: the builder at >= 80 % of raw).

    python -m benchmarks.build [--images 2000] [--workers 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from index_builder.datasets import open_dataset
from index_builder.features import encode_images
from index_builder.imagelist import ImageDataset
from index_builder.splits import make_splits
from retrieval.core.config import load_config
from retrieval.core.model import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.toml")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default index.workers)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    model, card = load_checkpoint(cfg.work_dir / "model")
    images = open_dataset(cfg.data, cfg.work_dir, card.image_size)
    ids = make_splits(images, cfg.data, cfg.work_dir / "splits.json").database[: args.images]
    workers = cfg.index.workers if args.workers is None else args.workers
    batch = cfg.index.batch_size

    data = ImageDataset(images, ids, card.image_size)
    x = torch.stack([data[i][0] for i in range(len(ids))])
    start = time.perf_counter()
    with torch.inference_mode():
        for chunk in x.split(batch):
            model.encode(chunk)
    raw = len(ids) / (time.perf_counter() - start)

    start = time.perf_counter()
    encode_images(model, images, ids, batch_size=batch, workers=workers, device="cpu")
    built = len(ids) / (time.perf_counter() - start)
    print(
        f"{len(ids)} images, batch {batch}, {workers} loader workers, {torch.get_num_threads()} threads: "
        f"raw forward {raw:.0f} images/s, build-index path {built:.0f} images/s ({built / raw:.0%} of raw)"
    )


if __name__ == "__main__":
    main()
