"""The one attacker contract, and the retrieval every model-based attacker reads labels through.

An attacker is whoever holds the server's query log, uploads included. Each one is a small class
in its own file, built from what it holds (the server's model and index, images it trained on,
the open-source client) and called the same way:

- ``infer(upload_bytes) -> label or None``: its guess of the true label of what was uploaded;
- ``detect(upload_bytes) -> score`` (only where ``detects``): higher means "more likely a
  protected upload"; the ladder reports it as ROC AUC over plain against protected uploads.

``rung`` groups attackers as the audit reports them: ``naive`` (the server's model on the bytes
as sent), ``re-encoding`` (the same after JPEG, WebP or a resize), ``second model`` (a model the
attacker trained itself) and ``knows the client`` (Kerckhoffs: it runs our client too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.votes import majority_label
from retrieval.service.search import Searcher

RUNGS = ("naive", "re-encoding", "second model", "knows the client")
NEAREST_K = 10  # votes when nothing lies within the radius (as in audit.replay)


class Attacker:
    """Base of every attacker: a name, a rung, a plain-words description, infer and detect."""

    name = ""
    rung = ""
    description = ""
    detects = False

    def infer(self, upload: bytes) -> str | None:
        raise NotImplementedError

    def detect(self, upload: bytes) -> float:
        raise NotImplementedError(f"attacker {self.name!r} has no detector")

    def infer_many(self, uploads: Sequence[bytes]) -> list[str | None]:
        return [self.infer(u) for u in uploads]

    def detect_many(self, uploads: Sequence[bytes]) -> list[float]:
        return [self.detect(u) for u in uploads]


def pixels(upload: bytes) -> torch.Tensor:
    """An upload decoded as the server decodes it: (3, H, W) in [0, 1]. ValueError if unreadable."""
    return to_tensor(decode_image(upload))


class CodeReader:
    """The label a code retrieves from a database: the majority vote over the items within the
    radius, or over the ``NEAREST_K`` nearest when none is (``audit.replay.attacker_view``).

    Memoised per code: protected and plain uploads share few distinct codes, and each lookup
    reads the labels of up to thousands of items.
    """

    def __init__(self, searcher: Searcher, radius: int) -> None:
        self.searcher, self.radius = searcher, radius
        self._seen: dict[bytes, str | None] = {}

    def label(self, code: np.ndarray) -> str | None:
        key = np.asarray(code, dtype=np.uint8).tobytes()
        if key not in self._seen:
            hits = self.searcher.search_code(np.frombuffer(key, dtype=np.uint8), self.radius)
            if hits:
                labels = [h.labels for h in hits]
            else:
                ids, _ = self.searcher.index.knn(
                    np.frombuffer(key, dtype=np.uint8).reshape(1, -1), NEAREST_K
                )[0]
                rows = self.searcher.store.images(ids.tolist())
                labels = [rows[int(i)].labels for i in ids]
            self._seen[key] = majority_label(labels)[0]
        return self._seen[key]


def server_codes(searcher: Searcher, images: list[torch.Tensor]) -> np.ndarray:
    """Codes of pixel images under the server's model, grouped by size into batches."""
    out = np.zeros((len(images), searcher.hash_bits // 8), dtype=np.uint8)
    by_shape: dict[tuple, list[int]] = {}
    for i, x in enumerate(images):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    for rows in by_shape.values():
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            out[chunk] = searcher.encode(torch.stack([images[i] for i in chunk]))
    return out
