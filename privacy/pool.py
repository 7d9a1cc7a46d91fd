"""The anchor pool: database codes of every label, fetched from the server once and cached.

P2S anchors are drawn on the user's machine, afresh for every protection, from this pool. The
request that fetches it names no label and no seed, and is the same for every client, so the
server cannot tell from it which target a protection will use (``/api/anchors?label=L`` would
tell it). The pool is kept on disk beside the cached model, so a client asks for it once per
server and model, not once per protection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privacy.targets import anchor_code
from retrieval.core.codes import hamming
from retrieval.core.votes import majority_label

log = logging.getLogger(__name__)
NEAREST_K = 10  # votes when no pool item lies within the radius


@dataclass(frozen=True, eq=False)
class AnchorPool:
    """Codes and labels of up to ``per_label`` database items of each label, plus the label prior.

    Shape: ids (m,) int64, codes (m, K/8) uint8, ``labels[i]`` the labels of item i.
    ``label_counts`` are the database's counts per label (the prior the target label is drawn
    from); ``radius`` is the server's default search radius.
    """

    per_label: int
    radius: int
    ids: np.ndarray
    codes: np.ndarray
    labels: tuple[tuple[str, ...], ...]
    label_counts: dict[str, int]

    @classmethod
    def from_json(cls, body: dict) -> AnchorPool:
        """Validate the JSON of ``GET /api/anchors/pool`` (or a cached copy of it)."""
        try:
            per_label, radius = int(body["per_label"]), int(body["radius"])
            counts = {str(item["name"]): int(item["count"]) for item in body["labels"]}
            items = body["items"]
            ids = np.array([int(item["id"]) for item in items], dtype=np.int64)
            codes = [bytes.fromhex(item["code"]) for item in items]
            labels = tuple(tuple(str(name) for name in item["labels"]) for item in items)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an anchor pool (per_label, radius, labels, items): {e!r}") from None
        if len({len(c) for c in codes}) > 1:
            raise ValueError("anchor pool codes differ in length")
        unknown = {name for names in labels for name in names} - set(counts)
        if unknown:
            raise ValueError(f"anchor pool items carry labels the pool does not list: {sorted(unknown)}")
        width = len(codes[0]) if codes else 0
        packed = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(codes), width).copy()
        return cls(per_label, radius, ids, packed, labels, counts)

    def to_json(self) -> dict:
        return {
            "per_label": self.per_label,
            "radius": self.radius,
            "labels": [{"name": n, "count": c} for n, c in self.label_counts.items()],
            "items": [
                {"id": int(i), "code": c.tobytes().hex(), "labels": list(lab)}
                for i, c, lab in zip(self.ids, self.codes, self.labels)
            ],
        }

    @property
    def sha256(self) -> str:
        """A digest of the pool, so users can compare theirs with others' out of band."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def codes_of(self, label: str) -> np.ndarray:
        """The pool's codes of items carrying ``label``. Shape: (m, K/8)."""
        return self.codes[[i for i, names in enumerate(self.labels) if label in names]]

    def eligible(self, n_anchor: int) -> dict[str, int]:
        """Labels that can be targets (>= n_anchor pool items), with their database counts."""
        held: dict[str, int] = {}
        for names in self.labels:
            for name in names:
                held[name] = held.get(name, 0) + 1
        return {n: c for n, c in self.label_counts.items() if c > 0 and held.get(n, 0) >= n_anchor}

    def draw_anchor(self, label: str, n_anchor: int, rng: np.random.Generator) -> np.ndarray:
        """P2S anchor of ``n_anchor`` pool items of ``label`` drawn with ``rng``. Shape: (1, K/8)."""
        codes = self.codes_of(label)
        if len(codes) < n_anchor:
            raise ValueError(
                f"label {label!r} has {len(codes)} items in the anchor pool; an anchor needs "
                f"{n_anchor} (privacy.n_anchor)"
            )
        return anchor_code(codes[rng.choice(len(codes), size=n_anchor, replace=False)])

    def likely_label(self, code: np.ndarray, radius: int | None = None) -> str | None:
        """What the server would infer from ``code``, estimated on this machine from the pool:
        a majority vote over the pool items within ``radius`` (default: the server's), or over
        the ``NEAREST_K`` nearest when none is. None for an empty pool."""
        if not len(self.codes):
            return None
        radius = self.radius if radius is None else radius
        dist = hamming(np.asarray(code, dtype=np.uint8).reshape(1, -1), self.codes)[0]
        near = np.flatnonzero(dist <= radius)
        if not len(near):
            near = np.argsort(dist, kind="stable")[:NEAREST_K]
        return majority_label(self.labels[i] for i in near)[0]


def cached_pool(path: Path, fetch: Callable[[], dict]) -> AnchorPool:
    """The pool kept at ``path``, fetched (and written atomically) only when there is none."""
    path = Path(path)
    if path.is_file():
        try:
            return AnchorPool.from_json(json.loads(path.read_text()))
        except ValueError as e:  # a corrupt cache is refetched, never trusted
            log.warning("ignoring the cached anchor pool %s: %s", path, e)
    pool = AnchorPool.from_json(fetch())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(pool.to_json()))
    os.replace(tmp, path)
    return pool
