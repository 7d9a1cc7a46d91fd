"""The client's surrogate model: a second hash model, trained here, that an ensemble protection
misleads beside the server's, so that a model the user never saw is more likely misled too.

A server that keeps uploads can run any model on them. The client cannot attack a model it does
not have, but it can train one of its own from what it legitimately holds: the anchor pool
(ids and labels of up to ``privacy.anchor_pool`` database items per label, the same for every
client) and those items' images (``GET /api/images/<id>``, the same fixed set for every client,
so fetching them reveals nothing about any target). The surrogate is ``small_cnn`` at 28 px
trained with CSQ (:mod:`privacy.csq`) once per server model and pool, cached beside the model.

Its code space is its own, so each mode gets its own target on it (:func:`surrogate_targets`):
semantic, the CSQ hash centre of the target label; untargeted, the complement of its own code;
carrier, its code of the private image.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from privacy.csq import CSQSettings, train_csq
from privacy.pool import AnchorPool
from retrieval.core.codes import pack
from retrieval.core.imaging import decode_image
from retrieval.core.model import HashNet, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
CENTRES_FILE = "centres.json"
# Another seed than the audit's attacker (its seed 0), so the two small_cnn never share their
# initial weights or hash centres by construction.
SURROGATE = CSQSettings(epochs=30, batch_size=64, seed=20260)


@dataclass(frozen=True, eq=False)
class Surrogate:
    """A locally trained hash model and its label centres. Shape: centres (L, K) {-1, +1}."""

    model: HashNet
    label_names: tuple[str, ...]
    centres: torch.Tensor

    def centre_code(self, label: str) -> np.ndarray:
        """The packed hash centre of ``label``, the surrogate's semantic target. Shape: (1, K/8)."""
        if label not in self.label_names:
            raise ValueError(f"the surrogate knows no label {label!r}; known: {list(self.label_names)}")
        return pack(self.centres[self.label_names.index(label)][None])


def surrogate_targets(
    s: Surrogate,
    mode: str,
    images: torch.Tensor,
    target_labels: Sequence[str | None] = (),
    private: torch.Tensor | None = None,
) -> np.ndarray:
    """The surrogate's own target per image for ``mode`` (see the module docstring). (n, K/8)."""
    if mode == "semantic":
        if len(target_labels) != len(images) or any(t is None for t in target_labels):
            raise ValueError("semantic mode needs one target label per image for the surrogate")
        return np.concatenate([s.centre_code(t) for t in target_labels])
    if mode == "untargeted":
        return ~s.model.encode(images)
    if mode == "carrier":
        if private is None or len(private) != len(images):
            raise ValueError("carrier mode needs one private image per carrier for the surrogate")
        return s.model.encode(private)
    raise ValueError(f"unknown mode {mode!r}; choose semantic, untargeted or carrier")


def cached_surrogate(
    pool: AnchorPool,
    fetch_image: Callable[[int], bytes],
    hash_bits: int,
    folder: Path,
    settings: CSQSettings = SURROGATE,
) -> Surrogate:
    """The surrogate kept in ``folder`` (keyed by the pool and ``settings``), else trained on the
    pool's images (fetched once with ``fetch_image(id) -> encoded image``) and written there."""
    key = json.dumps({"pool": pool.sha256, "bits": hash_bits, **asdict(settings)}, sort_keys=True)
    folder = Path(folder) / f"surrogate-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    names = tuple(pool.label_counts)
    if (folder / CENTRES_FILE).is_file():
        model, _ = load_checkpoint(folder)
        return Surrogate(model, names, torch.tensor(json.loads((folder / CENTRES_FILE).read_text())))
    if not len(pool.ids):
        raise ValueError("the anchor pool is empty: there is nothing to train a surrogate on")
    pixels = _pixels(pool, fetch_image, settings.image_size)
    labels = np.array([[n in item for n in names] for item in pool.labels], dtype=np.float32)
    model, centres = train_csq(pixels, labels, hash_bits, settings, "train the client's surrogate model")
    save_checkpoint(model, folder, model.card(dataset="the anchor pool's images", label_names=names))
    (folder / CENTRES_FILE).write_text(json.dumps(centres.tolist()))  # written last: marks it complete
    log.info("trained the surrogate on %d pool images into %s", len(pool.ids), folder)
    return Surrogate(model, names, centres)


def _pixels(pool: AnchorPool, fetch_image: Callable[[int], bytes], size: int) -> torch.Tensor:
    """The pool's images at ``size`` x ``size``, RGB uint8. Shape: (m, 3, size, size)."""
    out = np.zeros((len(pool.ids), 3, size, size), dtype=np.uint8)
    for r, i in enumerate(tqdm(pool.ids, desc="fetch the anchor pool's images", unit="image")):
        try:
            img = decode_image(fetch_image(int(i)))
        except ValueError as e:
            raise ValueError(f"pool image {int(i)} is not a readable image: {e}") from None
        out[r] = np.asarray(img.resize((size, size)), dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(out)


__all__ = ["SURROGATE", "Surrogate", "cached_surrogate", "surrogate_targets"]
