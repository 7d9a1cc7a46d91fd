"""Rung 3, a second model: a hash model the attacker trained itself, of another architecture.

The protection is computed against the server's published model only; a model it never saw (here
``small_cnn`` trained end to end on the database split, ``audit.attackers.training``) is misled
only as far as the perturbation transfers. Its disagreement with the server's own reading is a
detector: a protected upload retrieves one label on the server's model and another here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from audit.attackers.base import Attacker, pixels
from audit.attackers.naive import NaiveServer
from audit.attackers.training import Database
from retrieval.core.codes import hamming
from retrieval.core.model import HashNet
from retrieval.core.votes import label_votes, majority_of

NEAREST_K = 10


class SecondModel(Attacker):
    """Its own model's code of the upload, read against its own codes of the database."""

    name = "second-model"
    rung = "second model"
    detects = True

    def __init__(self, model: HashNet, db: Database, radius: int, server: NaiveServer) -> None:
        self.model, self.db, self.radius, self.server = model.eval(), db, radius, server
        self.db_codes = np.concatenate(
            [model.encode(db.pixels[i : i + 512].float() / 255) for i in range(0, len(db.ids), 512)]
        )
        self.description = (
            f"a {model.backbone_name} hash model the attacker trained on the database ({model.image_size} px)"
        )

    def votes(self, uploads: Sequence[bytes]) -> list[dict[str, int]]:
        """Label votes of the items its code retrieves (within the radius, else the nearest)."""
        codes = self.model.encode(torch.stack([pixels(u) for u in uploads])) if uploads else []
        out = []
        for code in codes:
            dist = hamming(code.reshape(1, -1), self.db_codes)[0]
            rows = np.flatnonzero(dist <= self.radius)
            if not len(rows):
                rows = np.argsort(dist, kind="stable")[:NEAREST_K]
            out.append(label_votes(self.db.label_sets(rows)))
        return out

    def infer(self, upload: bytes) -> str | None:
        return self.infer_many([upload])[0]

    def infer_many(self, uploads: Sequence[bytes]) -> list[str | None]:
        return [majority_of(v) for v in self._batched_votes(uploads)]

    def detect(self, upload: bytes) -> float:
        return self.detect_many([upload])[0]

    def detect_many(self, uploads: Sequence[bytes]) -> list[float]:
        """1 - (votes for the label the server's model infers) / (votes for its own top label):
        0 when both models read the same label, 1 when its items never carry the server's."""
        seen = self.server.infer_many(uploads)
        scores = []
        for votes, label in zip(self._batched_votes(uploads), seen):
            total = max(votes.values(), default=0)
            scores.append(1.0 - (votes.get(label, 0) / total if total and label else 0.0))
        return scores

    def _batched_votes(self, uploads: Sequence[bytes]) -> list[dict[str, int]]:
        by_shape: dict[tuple, list[int]] = {}
        for i, u in enumerate(uploads):
            by_shape.setdefault(tuple(pixels(u).shape), []).append(i)
        out: list[dict[str, int]] = [{}] * len(uploads)
        for rows in by_shape.values():
            for start in range(0, len(rows), 64):
                chunk = rows[start : start + 64]
                for i, v in zip(chunk, self.votes([uploads[i] for i in chunk])):
                    out[i] = v
        return out
