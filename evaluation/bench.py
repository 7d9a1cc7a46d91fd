"""The evaluation protocol shared by every experiment (Huang et al. 2022, Sec. 5.1-5.3).

- Models: the trained one (work_dir/model) at its bit length; other bit lengths get a model
  trained with the same config into work_dir/eval/models/<K>bits, reused while its model card
  still matches the config.
- Database codes come from the evaluated model (cached backbone features + head when the
  backbone is frozen, else the whole model), never from the service's store.
- Queries: a seeded random sample of the query split, the same for every bit length. Each gets a
  random target label it does not carry with >= n_anchor database items, n_anchor database items
  of that label (P2S anchor = sign of their sum) and one of them (P2P target). Targets are
  chosen by item, so every bit length attacks toward the same images.
- Attacks run in batches and are memoised per (bits, method, target, eps, steps, queries), so
  ``run_all`` never runs the same attack twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.options import EvalOptions
from index_builder.datasets import open_dataset
from index_builder.dpsh import card_matches, train
from index_builder.features import cached_features, encode_images, head_codes
from index_builder.imagelist import ImageDataset, ImageList
from index_builder.splits import Splits, make_splits
from privacy.attacks import from_config
from privacy.metrics import psnr
from privacy.targets import anchor_code, pick_target_label, untargeted_target
from retrieval.core.config import Config, PrivacyConfig, override
from retrieval.core.metrics import MapResult, mean_average_precision
from retrieval.core.model import HashNet, load_checkpoint, read_card, resolve_device

log = logging.getLogger(__name__)

METHODS = ("noise", "tanh", "rnm", "rnm-literal")
TARGETS = ("p2p", "p2s", "complement")


@dataclass(frozen=True)
class QuerySample:
    """The seeded queries and their targets. Rows index the database split (``Bench.db_*``)."""

    index: np.ndarray  # (n,) indices into the ImageList, sorted
    labels: np.ndarray  # (n, L) multi-hot
    target_label: np.ndarray  # (n,) label column
    anchor_rows: np.ndarray  # (n, n_anchor) rows of the database split
    p2p_row: np.ndarray  # (n,) one of anchor_rows

    def target_onehot(self, n_labels: int) -> np.ndarray:
        out = np.zeros((len(self.index), n_labels), dtype=np.uint8)
        out[np.arange(len(self.index)), self.target_label] = 1
        return out


@dataclass
class Bench:
    """One bit length: its model, database codes and the query sample's images and targets."""

    bits: int
    model: HashNet
    db_codes: np.ndarray  # (m, K/8)
    images: torch.Tensor  # (n, 3, S, S) query images in [0, 1]
    codes: np.ndarray  # (n, K/8) codes of the unmodified queries
    targets: dict[str, np.ndarray]  # "p2p" | "p2s" | "complement" -> (n, K/8)


@dataclass(frozen=True)
class Outcome:
    """An attack run over (a prefix of) the query sample; images are not kept."""

    codes: np.ndarray  # (n, K/8)
    psnr: np.ndarray  # (n,) dB
    iterations: np.ndarray  # (n,)
    reached: np.ndarray  # (n,) bool
    trace: np.ndarray  # (steps + 1, n) Hamming distance to the target per iteration


@dataclass
class Workbench:
    """Lazily loaded dataset, models, codes and attack results, shared by the experiments."""

    cfg: Config
    options: EvalOptions
    _benches: dict[int, Bench] = field(default_factory=dict)
    _outcomes: dict[tuple, Outcome] = field(default_factory=dict)
    _data: tuple[ImageList, Splits] | None = None
    _sample: QuerySample | None = None

    @property
    def device(self) -> str:
        return resolve_device(self.options.device or self.cfg.model.device)

    @property
    def eps(self) -> float:
        return self.options.eps if self.options.eps is not None else self.cfg.privacy.eps

    @property
    def rnm_steps(self) -> int:
        return self.options.rnm_steps or self.cfg.privacy.steps

    @property
    def topk(self) -> int:
        return self.cfg.train.map_topk

    def data(self) -> tuple[ImageList, Splits]:
        if self._data is None:
            images = open_dataset(self.cfg.data, self.cfg.work_dir, self.cfg.model.image_size)
            self._data = images, make_splits(images, self.cfg.data, self.cfg.work_dir / "splits.json")
        return self._data

    @property
    def db_labels(self) -> np.ndarray:
        images, splits = self.data()
        return images.labels[splits.database]

    @property
    def db_ids(self) -> np.ndarray:
        return self.data()[1].database

    def sample(self) -> QuerySample:
        """The seeded query sample and its targets (module docstring)."""
        if self._sample is None:
            self._sample = draw_sample(
                *self.data(), self.options.queries, self.cfg.privacy.n_anchor, self.options.seed
            )
        return self._sample

    def bench(self, bits: int) -> Bench:
        if bits not in self._benches:
            self._benches[bits] = self._load_bench(bits)
        return self._benches[bits]

    def _load_bench(self, bits: int) -> Bench:
        images, splits = self.data()
        model = model_for_bits(self.cfg, bits).to(self.device).eval()
        kw = dict(batch_size=self.cfg.index.batch_size, workers=self.cfg.index.workers, device=self.device)
        if self.cfg.model.freeze_backbone:
            feats = cached_features(
                model, images, splits.database, self.cfg.work_dir / "features", desc="database features", **kw
            )
            db_codes = head_codes(model, feats)
        else:
            db_codes = encode_images(
                model, images, splits.database, desc=f"hash database ({bits} bits)", **kw
            )
        sample = self.sample()
        ds = ImageDataset(images, sample.index, model.image_size)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        codes = np.concatenate([model.encode(b.to(self.device)) for b in x.split(self.options.batch_size)])
        targets = {
            "p2s": np.concatenate([anchor_code(db_codes[rows]) for rows in sample.anchor_rows]),
            "p2p": db_codes[sample.p2p_row].copy(),
            "complement": untargeted_target(codes),
        }
        return Bench(bits, model, db_codes, x, codes, targets)

    def protect(
        self,
        bits: int,
        method: str,
        target: str,
        eps: float,
        *,
        steps: int | None = None,
        queries: int | None = None,
    ) -> Outcome:
        """Run (or recall) ``method`` toward ``target`` codes on the first ``queries`` queries.

        PGD attacks stop early once an image's code equals its target and hold its trace at the
        final distance (the Result contract); the noise baseline always perturbs (no early stop).
        """
        if method not in METHODS or target not in TARGETS:
            raise ValueError(
                f"method must be in {METHODS} and target in {TARGETS}; got {method!r}, {target!r}"
            )
        n = min(queries or self.options.queries, len(self.sample().index))
        target = "p2s" if method == "noise" else target  # noise ignores its target; share one run
        steps = (
            1
            if method == "noise"
            else steps or (self.options.tanh_steps if method == "tanh" else self.rnm_steps)
        )
        key = (bits, method, target, round(eps, 8), steps, n)
        if key not in self._outcomes:
            self._outcomes[key] = self._run(bits, method, target, eps, steps, n)
        return self._outcomes[key]

    def _run(self, bits: int, method: str, target: str, eps: float, steps: int, n: int) -> Outcome:
        bench, p = self.bench(bits), self.cfg.privacy
        parts = []
        batches = range(0, n, self.options.batch_size)
        for start in tqdm(
            batches, desc=f"{method} {target} {bits} bits eps {eps:.3f}", unit="batch", leave=False
        ):
            stop = min(start + self.options.batch_size, n)
            # a seed per batch: the noise baseline draws fresh noise for every batch, reproducibly
            attack = make_attack_for(
                method, bench.model, p, eps=eps, steps=steps, seed=self.options.seed + start
            )
            x = bench.images[start:stop].to(self.device)
            r = attack(x, bench.targets[target][start:stop])
            parts.append(
                (
                    r.codes,
                    psnr(r.images.cpu(), x.cpu()).numpy(),
                    r.iterations.cpu().numpy(),
                    r.reached.cpu().numpy(),
                    r.trace.cpu().numpy(),
                )
            )
        codes, ps, its, reached, traces = zip(*parts)
        return Outcome(
            np.concatenate(codes),
            np.concatenate(ps),
            np.concatenate(its),
            np.concatenate(reached),
            np.concatenate(traces, axis=1),
        )

    def map_own(self, bits: int, codes: np.ndarray) -> MapResult:
        """MAP of codes of the first len(codes) queries against their own labels."""
        labels = self.sample().labels[: len(codes)]
        return mean_average_precision(
            codes, labels, self.bench(bits).db_codes, self.db_labels, self.db_ids, self.topk
        )

    def t_map(self, bits: int, codes: np.ndarray) -> MapResult:
        """t-MAP of codes of the first len(codes) queries against their target labels."""
        return t_map(
            codes,
            self.sample().target_label[: len(codes)],
            self.bench(bits).db_codes,
            self.db_labels,
            self.db_ids,
            self.topk,
        )

    def write_protocol(self, out_dir: Path) -> Path:
        """queries.json: which queries and targets were used, for provenance and re-checks."""
        images, _ = self.data()
        s = self.sample()
        path = Path(out_dir) / "queries.json"
        path.write_text(
            json.dumps(
                {
                    "seed": self.options.seed,
                    "n_anchor": self.cfg.privacy.n_anchor,
                    "map_topk": self.topk,
                    "query_index": s.index.tolist(),
                    "target_label": [images.label_names[j] for j in s.target_label],
                    "anchor_ids": self.db_ids[s.anchor_rows].tolist(),
                    "p2p_id": self.db_ids[s.p2p_row].tolist(),
                },
                indent=1,
            )
        )
        return path


def open_workbench(
    cfg: Config, out_dir: Path, options: EvalOptions | None, workbench: Workbench | None
) -> tuple[Workbench, Path]:
    """The shared workbench (a new one unless given) and the created output folder."""
    wb = workbench if workbench is not None else Workbench(cfg, options or EvalOptions())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wb.write_protocol(out)
    return wb, out


def make_attack_for(method: str, model: HashNet, p: PrivacyConfig, *, eps: float, steps: int, seed: int):
    """The attack of an evaluation method name: rnm (config variant), rnm-literal, tanh, noise;
    step size and rule from the privacy config (``privacy.attacks.from_config``)."""
    if method == "noise":
        return from_config(replace(p, method="noise"), model, eps=eps, early_stop=False, seed=seed)
    if method == "tanh":
        return from_config(replace(p, method="tanh"), model, eps=eps, steps=steps)
    variant = "literal" if method == "rnm-literal" else p.rnm_variant
    return from_config(replace(p, method="rnm", rnm_variant=variant), model, eps=eps, steps=steps)


def draw_sample(images: ImageList, splits: Splits, queries: int, n_anchor: int, seed: int) -> QuerySample:
    """Seeded queries from the query split with targets drawn as in the module docstring."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(splits.query, size=min(queries, len(splits.query)), replace=False))
    db_labels = images.labels[splits.database]
    counts = dict(zip(images.label_names, db_labels.sum(axis=0).tolist()))
    column = {name: j for j, name in enumerate(images.label_names)}
    target, anchors, p2p = [], [], []
    for own in images.label_sets(index):
        j = column[pick_target_label(own, counts, n_anchor, rng)]
        rows = np.sort(rng.choice(np.flatnonzero(db_labels[:, j]), size=n_anchor, replace=False))
        target.append(j)
        anchors.append(rows)
        p2p.append(rows[rng.integers(n_anchor)])
    return QuerySample(
        index,
        images.labels[index],
        np.array(target, dtype=np.int64),
        np.array(anchors, dtype=np.int64).reshape(len(index), n_anchor),
        np.array(p2p, dtype=np.int64),
    )


def t_map(
    codes: np.ndarray,
    target_label: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    db_ids: np.ndarray | None = None,
    topk: int = 0,
) -> MapResult:
    """t-MAP (Huang et al. Sec. 5.2): MAP with each query's labels replaced by its target label.

    Shape: codes (n, K/8), target_label (n,) label columns, db_codes (m, K/8), db_labels (m, L).
    """
    target_label = np.asarray(target_label, dtype=np.int64)
    n_labels = np.asarray(db_labels).shape[1]
    if target_label.shape != (len(codes),) or (
        target_label.size and not 0 <= target_label.min() <= target_label.max() < n_labels
    ):
        raise ValueError(
            f"target_label must be {len(codes)} label columns in [0, {n_labels}); "
            f"got {target_label.tolist()[:10]}"
        )
    onehot = np.zeros((len(codes), n_labels), dtype=np.uint8)
    onehot[np.arange(len(codes)), target_label] = 1
    return mean_average_precision(codes, onehot, db_codes, db_labels, db_ids, topk)


def model_for_bits(cfg: Config, bits: int) -> HashNet:
    """The trained model at cfg's length, else a model of ``bits`` trained with cfg's settings."""
    if bits == cfg.model.hash_bits:
        model, card = load_checkpoint(cfg.work_dir / "model")
        if card.config and not card_matches(card.config, cfg):
            log.warning(
                "work_dir/model was trained with other settings than this config; evaluating it anyway"
            )
    else:
        bcfg = override(cfg, model={"hash_bits": bits})
        model_dir = cfg.work_dir / "eval" / "models" / f"{bits}bits"
        if not _checkpoint_matches(bcfg, model_dir):
            log.info("training a %d-bit model for the evaluation in %s", bits, model_dir)
            train(bcfg, model_dir=model_dir)
        model, card = load_checkpoint(model_dir)
    if card.hash_bits != bits:
        raise ValueError(f"the model for {bits} bits has {card.hash_bits}-bit codes")
    return model


def _checkpoint_matches(cfg: Config, model_dir: Path) -> bool:
    try:
        card = read_card(model_dir)
    except (FileNotFoundError, ValueError):
        return False
    return card_matches(card.config, cfg)
