"""The knowing attacker's training data: uploads it makes itself with the open-source client.

It holds the database (images and true labels), so it picks a few items per label, sends them
plain, and protects them in each mode with the very client users run (``privacy.client``): the
server's published model, the anchor pool every client fetches, fresh randomness of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from privacy.client import Protector
from privacy.pool import AnchorPool
from retrieval.core.config import PrivacyConfig
from retrieval.core.imaging import load_image, to_png, to_tensor
from retrieval.service.anchors import anchor_pool_body
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)
BATCH = 32


@dataclass(frozen=True)
class OwnUpload:
    upload: bytes
    true_label: str
    group: str  # "plain" or the protection mode


def own_uploads(
    searcher: Searcher,
    privacy: PrivacyConfig,
    radius: int,
    per_label: int,
    modes: Sequence[str],
    rng: np.random.Generator,
) -> list[OwnUpload]:
    """Plain uploads of ``per_label`` database items per label, and the same items protected in
    each of ``modes`` (carrier: another item carries each one, whose label is the true one)."""
    store = searcher.store
    picks: list[tuple[int, str]] = []
    for name in store.label_names():
        ids = store.codes_with_label(name, 10**9, 0)[0]
        if len(ids):
            chosen = rng.choice(len(ids), size=min(per_label, len(ids)), replace=False)
            picks += [(int(ids[i]), name) for i in chosen]
    images = [to_tensor(load_image(searcher.image_path(i))) for i, _ in picks]
    labels = [label for _, label in picks]
    out = [OwnUpload(to_png(x), label, "plain") for x, label in zip(images, labels)]
    pool = AnchorPool.from_json(anchor_pool_body(store, privacy.anchor_pool, radius))
    protector = Protector(searcher.model, privacy, pool, rng)
    for mode in modes:
        order = list(range(len(images)))
        carriers = _carriers(labels, rng) if mode == "carrier" else order
        for rows in tqdm(_batches(order, images, carriers), desc=f"attacker's own {mode} protections"):
            x = torch.stack([images[carriers[r]] for r in rows])
            private = torch.stack([images[r] for r in rows]) if mode == "carrier" else None
            done = protector.protect_batch(x, mode, private=private)
            out += [OwnUpload(p.png(), labels[r], mode) for p, r in zip(done, rows)]
    return out


def _batches(order: list[int], images: list[torch.Tensor], carriers: list[int]) -> list[list[int]]:
    """Rows in batches of at most BATCH whose carrier and private images share their shapes."""
    groups: dict[tuple, list[int]] = {}
    for r in order:
        groups.setdefault((tuple(images[carriers[r]].shape), tuple(images[r].shape)), []).append(r)
    return [rows[i : i + BATCH] for rows in groups.values() for i in range(0, len(rows), BATCH)]


def _carriers(labels: list[str], rng: np.random.Generator) -> list[int]:
    """For each item, another item of another label to carry it (itself if there is none)."""
    out = []
    for label in labels:
        others = [j for j, other in enumerate(labels) if other != label]
        out.append(int(rng.choice(others)) if others else len(out))
    return out
