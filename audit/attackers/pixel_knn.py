"""Rung 3, a second "model" with no model at all: k nearest database images in pixel space.

The attacker keeps small copies of its database images and compares an upload's pixels with
them. A perturbation of a few grey levels, aimed at a hash model, barely moves an image in pixel
space, so this attacker is not misled by it (a person looking at the image is not either).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from audit.attackers.base import Attacker, pixels
from audit.attackers.training import Database
from retrieval.core.votes import majority_label

CHUNK = 256  # uploads per distance block


class PixelKNN(Attacker):
    """Majority label of the ``k`` database images nearest in L2 at the database's size."""

    name = "pixel-knn"
    rung = "second model"

    def __init__(self, db: Database, k: int = 10) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1; got {k!r}")
        self.db, self.k = db, k
        self.size = db.pixels.shape[-1]
        self._flat = db.pixels.flatten(1).float() / 255
        self.description = f"{k} nearest database images in pixels ({self.size} x {self.size})"

    def infer(self, upload: bytes) -> str | None:
        return self.infer_many([upload])[0]

    def infer_many(self, uploads: Sequence[bytes]) -> list[str | None]:
        small = [self._small(u) for u in uploads]
        out: list[str | None] = []
        for start in range(0, len(small), CHUNK):
            q = torch.stack(small[start : start + CHUNK])
            nearest = torch.cdist(q, self._flat).topk(min(self.k, len(self._flat)), largest=False).indices
            out += [majority_label(self.db.label_sets(row.numpy()))[0] for row in nearest]
        return out

    def _small(self, upload: bytes) -> torch.Tensor:
        x = pixels(upload).unsqueeze(0)
        if x.shape[-2:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True
            )
        return (x * 255).round().flatten() / 255
