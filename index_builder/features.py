"""Backbone features of dataset images, batched, with an on-disk cache for frozen backbones.

With a frozen backbone, the features of an image never change, so training the hash head
and hashing the database both reuse one pass of the backbone. The cache key binds the
backbone's weights, the input size, the resizer (``imaging.RESIZER``) and the image list, so a
stale cache is never read. A cache written before the resizer was part of the key is reused
only when every image already has the model's input size (no resize either way, e.g. the
Fashion-MNIST export), so the default demo does not recompute its features.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from index_builder.imagelist import ImageDataset, ImageList
from retrieval.core.codes import pack
from retrieval.core.imaging import RESIZER
from retrieval.core.model import HashNet

log = logging.getLogger(__name__)


def loader(
    images: ImageList,
    indices: np.ndarray,
    image_size: int,
    batch_size: int,
    workers: int,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ImageDataset(images, indices, image_size),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=gen,
        persistent_workers=False,
        pin_memory=False,
    )


@torch.inference_mode()
def compute_features(
    model: HashNet,
    images: ImageList,
    indices: np.ndarray,
    *,
    batch_size: int,
    workers: int,
    device: str,
    desc: str = "features",
) -> torch.Tensor:
    """Backbone features of ``images[indices]`` in order. Shape: -> (len(indices), D) float32."""
    model.eval().to(device)
    out = []
    batches = loader(images, indices, model.image_size, batch_size, workers)
    for x, _ in tqdm(batches, desc=desc, unit="batch", leave=False):
        out.append(model.features(x.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.inference_mode()
def head_codes(model: HashNet, feats: torch.Tensor) -> np.ndarray:
    """Codes from cached backbone features: sign(head(features)). Shape: (n, D) -> (n, K/8)."""
    model.eval()
    dev = next(model.head.parameters()).device
    return pack(torch.cat([model.head(f.to(dev)).cpu() for f in feats.split(4096)]))


@torch.inference_mode()
def encode_images(
    model: HashNet,
    images: ImageList,
    indices: np.ndarray,
    *,
    batch_size: int,
    workers: int,
    device: str,
    desc: str = "hash images",
) -> np.ndarray:
    """Codes of ``images[indices]`` through the whole model. Shape: -> (len(indices), K/8) uint8."""
    model.eval().to(device)
    batches = loader(images, indices, model.image_size, batch_size, workers)
    out = [model.encode(x.to(device)) for x, _ in tqdm(batches, desc=desc, unit="batch", leave=False)]
    return np.concatenate(out) if out else np.zeros((0, model.hash_bits // 8), np.uint8)


def backbone_digest(model: HashNet, resizer: str = RESIZER) -> str:
    """sha256 over the backbone's weights, input size and resizer: the identity of its features."""
    h = hashlib.sha256(f"{model.backbone_name}:{model.image_size}{':' + resizer if resizer else ''}".encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def images_digest(images: ImageList, indices: np.ndarray) -> str:
    h = hashlib.sha256(str(images.root).encode())
    for i in indices:
        h.update(images.paths[int(i)].encode() + b"\0")
    return h.hexdigest()


def cached_features(
    model: HashNet,
    images: ImageList,
    indices: np.ndarray,
    cache_dir: Path,
    *,
    batch_size: int,
    workers: int,
    device: str,
    desc: str = "features",
) -> torch.Tensor:
    """Like :func:`compute_features`, reading/writing ``cache_dir`` (atomic writes)."""
    images_key = images_digest(images, indices)
    key = hashlib.sha256((backbone_digest(model) + images_key).encode()).hexdigest()
    path = Path(cache_dir) / f"{key[:32]}.safetensors"
    if not path.is_file():
        _adopt_legacy(model, images, indices, images_key, path)
    if path.is_file():
        log.info("reusing cached features %s", path)
        return load_file(path)["features"]
    feats = compute_features(
        model, images, indices, batch_size=batch_size, workers=workers, device=device, desc=desc
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": feats.contiguous()}, tmp)
    os.replace(tmp, path)
    return feats


def _adopt_legacy(
    model: HashNet, images: ImageList, indices: np.ndarray, images_key: str, path: Path
) -> None:
    """Link a cache written before the resizer joined the key to ``path``, when it is valid.

    It is valid when no image needed resizing: then the old PIL resize never ran, and neither
    does the model's, so its features are exactly today's.
    """
    old = hashlib.sha256((backbone_digest(model, resizer="") + images_key).encode()).hexdigest()
    legacy = path.with_name(f"{old[:32]}.safetensors")
    if not legacy.is_file():
        return
    size = (model.image_size, model.image_size)
    for i in indices:
        with Image.open(images.root / images.paths[int(i)]) as img:  # reads the header only
            if img.size != size:
                log.info("not reusing %s: %s is %s, not %s", legacy, images.paths[int(i)], img.size, size)
                return
    try:
        os.link(legacy, path)
    except OSError:
        shutil.copyfile(legacy, path)
    log.info("reusing features cached before the resizer joined the key: %s", legacy)
