"""The query sample, its targets and t-MAP: the benchmark protocol of DHTA (Bai et al. 2020),
ProS-GAN (Wang et al. 2021) and Huang et al. 2022, Sec. 5.1-5.2.

- Single-label data (every image carries one label, e.g. Fashion-MNIST): each query gets a
  random label it does not carry with >= n_anchor database items (``privacy.targets.
  pick_target_label``); its anchors are n_anchor database items of that label.
- Multi-label data (FLICKR-25K, NUS-WIDE): each query gets a target label *vector*, drawn
  uniformly from the label vectors that >= n_anchor database items carry exactly and that
  differ from the query's own vector; its anchors are n_anchor database items whose label
  vector equals it (DHTA's ``dhta.py``: ``database_labels_str == target_label_str``).
- Either way the P2S target is the anchor code (sign of the sum of the anchors' codes) and the
  P2P target one anchor's code, and t-MAP scores each query against its target vector:
  relevant = shares at least one label with it (DHTA's ``CalcMap``).

Differences from DHTA's code, on purpose: a candidate vector needs >= n_anchor items and the
anchors are drawn without replacement (DHTA: > n_anchor items, drawn with replacement), and the
query's own vector is never the target (DHTA's draw does not exclude it).

``make_attack_for`` builds the attack of each method name the tables use, with the privacy
config's settings (one set of attack defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from index_builder.imagelist import ImageList
from index_builder.splits import Splits
from privacy.attacks import from_config
from privacy.targets import pick_target_label
from retrieval.core.config import PrivacyConfig
from retrieval.core.metrics import MapResult, mean_average_precision
from retrieval.core.model import HashNet


@dataclass(frozen=True)
class QuerySample:
    """The seeded queries and their targets. Rows index the database split (``Bench.db_*``)."""

    index: np.ndarray  # (n,) indices into the ImageList, sorted
    labels: np.ndarray  # (n, L) multi-hot
    target_labels: np.ndarray  # (n, L) multi-hot target label vectors
    anchor_rows: np.ndarray  # (n, n_anchor) rows of the database split
    p2p_row: np.ndarray  # (n,) one of anchor_rows
    multi_label: bool


def is_multi_label(labels: np.ndarray) -> bool:
    """Whether any image carries more than one label (then targets are label vectors)."""
    labels = np.asarray(labels)
    return bool(labels.size and labels.sum(axis=1).max() > 1)


def draw_sample(images: ImageList, splits: Splits, queries: int, n_anchor: int, seed: int) -> QuerySample:
    """Seeded queries from the query split with targets drawn as in the module docstring."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(splits.query, size=min(queries, len(splits.query)), replace=False))
    db_labels = images.labels[splits.database]
    multi = is_multi_label(images.labels)
    draw = _vector_drawer(db_labels, n_anchor) if multi else _label_drawer(images, db_labels, n_anchor)
    targets, anchors, p2p = [], [], []
    for i in index:
        vector, rows = draw(images.labels[int(i)], rng)
        targets.append(vector)
        anchors.append(rows)
        p2p.append(rows[rng.integers(n_anchor)])
    n, width = len(index), images.labels.shape[1]
    return QuerySample(
        index,
        images.labels[index],
        np.array(targets, dtype=np.uint8).reshape(n, width),
        np.array(anchors, dtype=np.int64).reshape(n, n_anchor),
        np.array(p2p, dtype=np.int64),
        multi,
    )


Drawer = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _label_drawer(images: ImageList, db_labels: np.ndarray, n_anchor: int) -> Drawer:
    """Single-label data: a label the query does not carry; anchors carrying it."""
    counts = dict(zip(images.label_names, db_labels.sum(axis=0).tolist()))

    def draw(own: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        names = [images.label_names[j] for j in np.flatnonzero(own)]
        j = images.label_names.index(pick_target_label(names, counts, n_anchor, rng))
        rows = np.sort(rng.choice(np.flatnonzero(db_labels[:, j]), size=n_anchor, replace=False))
        vector = np.zeros(db_labels.shape[1], dtype=np.uint8)
        vector[j] = 1
        return vector, rows

    return draw


def _vector_drawer(db_labels: np.ndarray, n_anchor: int) -> Drawer:
    """Multi-label data: a vector other than the query's that >= n_anchor items carry exactly."""
    vectors, inverse, counts = np.unique(db_labels, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    members = {int(v): np.flatnonzero(inverse == v) for v in np.flatnonzero(counts >= n_anchor)}

    def draw(own: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # np.unique sorts the vectors, so a seeded draw is reproducible
        candidates = [v for v in members if not np.array_equal(vectors[v], own)]
        if not candidates:
            raise ValueError(
                f"no label vector other than the query's {own.tolist()} is carried by "
                f">= {n_anchor} database items"
            )
        pick = candidates[int(rng.integers(len(candidates)))]
        rows = np.sort(rng.choice(members[pick], size=n_anchor, replace=False))
        return vectors[pick].astype(np.uint8), rows

    return draw


def t_map(
    codes: np.ndarray,
    target_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    db_ids: np.ndarray | None = None,
    topk: int = 0,
) -> MapResult:
    """t-MAP (Huang et al. Sec. 5.2, DHTA): MAP with each query's labels replaced by its target.

    Shape: codes (n, K/8); target_labels (n, L) multi-hot target vectors, or (n,) label columns
    (one-hot targets); db_codes (m, K/8); db_labels (m, L). Relevant = shares a label with the target.
    """
    n_labels = np.asarray(db_labels).shape[1]
    targets = np.asarray(target_labels)
    if targets.ndim == 1:
        columns = targets.astype(np.int64)
        if columns.shape != (len(codes),) or (
            columns.size and not 0 <= columns.min() <= columns.max() < n_labels
        ):
            raise ValueError(
                f"target_labels must be {len(codes)} label columns in [0, {n_labels}); "
                f"got {columns.tolist()[:10]}"
            )
        targets = np.zeros((len(codes), n_labels), dtype=np.uint8)
        targets[np.arange(len(codes)), columns] = 1
    if targets.shape != (len(codes), n_labels) or not np.isin(targets, (0, 1)).all():
        raise ValueError(
            f"target_labels must be 0/1 of shape ({len(codes)}, {n_labels}); got shape {targets.shape}"
        )
    return mean_average_precision(codes, targets, db_codes, db_labels, db_ids, topk)


def make_attack_for(
    method: str,
    model: HashNet,
    p: PrivacyConfig,
    *,
    eps: float,
    steps: int,
    seed: int,
    early_stop: bool = True,
):
    """The attack of an evaluation method name: rnm (config variant), rnm-literal, tanh, noise;
    step size and rule from the privacy config (``privacy.attacks.from_config``)."""
    if method == "noise":
        return from_config(replace(p, method="noise"), model, eps=eps, early_stop=False, seed=seed)
    if method == "tanh":
        return from_config(replace(p, method="tanh"), model, eps=eps, steps=steps, early_stop=early_stop)
    variant = "literal" if method == "rnm-literal" else p.rnm_variant
    return from_config(
        replace(p, method="rnm", rnm_variant=variant), model, eps=eps, steps=steps, early_stop=early_stop
    )
