"""The evaluation protocol shared by every experiment (Huang et al. 2022, Sec. 5.1-5.3).

- Models (``evaluation.models``): the trained one (work_dir/model) at its bit length; other bit
  lengths get a model trained with the same config into work_dir/eval/models/<K>bits; the
  convergence-versus-scale experiment adds named variants. A bench is keyed by its bit length
  (int) or its variant's name (str).
- Database codes come from the evaluated model (cached backbone features + head when the
  backbone is frozen, else the whole model), never from the service's store.
- Queries and targets (``evaluation.protocol``): a seeded random sample of the query split, the
  same for every model, with target labels (label vectors on multi-label data) and anchors
  drawn by item, so every model attacks toward the same images.
- Attacks run in batches and are memoised per (bench, method, target, eps, steps, early stop,
  queries), so ``run_all`` never runs the same attack twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.models import ModelVariant, model_for_bits, variant_config, variant_model
from evaluation.options import EvalOptions
from evaluation.protocol import QuerySample, draw_sample, make_attack_for, t_map
from index_builder.datasets import open_dataset
from index_builder.features import cached_features, encode_images, head_codes
from index_builder.imagelist import ImageDataset, ImageList
from index_builder.splits import Splits, make_splits
from privacy.metrics import psnr
from privacy.targets import anchor_code, untargeted_target
from retrieval.core.config import Config
from retrieval.core.metrics import MapResult, mean_average_precision
from retrieval.core.model import HashNet, resolve_device

log = logging.getLogger(__name__)

METHODS = ("noise", "tanh", "rnm", "rnm-literal")
TARGETS = ("p2p", "p2s", "complement")


@dataclass
class Bench:
    """One bit length: its model, database codes and the query sample's images and targets."""

    key: int | str  # bit length, or a model variant's name
    model: HashNet
    db_codes: np.ndarray  # (m, K/8)
    db_labels: np.ndarray  # (m, L)
    db_ids: np.ndarray  # (m,)
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

    @property
    def first_hit(self) -> np.ndarray:
        """Iteration at which each image's code first equals its target; -1 if it never does."""
        hit = self.trace == 0
        return np.where(hit.any(axis=0), hit.argmax(axis=0), -1)


@dataclass
class Workbench:
    """Lazily loaded dataset, models, codes and attack results, shared by the experiments."""

    cfg: Config
    options: EvalOptions
    _benches: dict[int | str, Bench] = field(default_factory=dict)
    _variants: dict[str, ModelVariant] = field(default_factory=dict)
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
            self._data = _open_data(self.cfg)
        return self._data

    def sample(self) -> QuerySample:
        """The seeded query sample and its targets (``evaluation.protocol``)."""
        if self._sample is None:
            self._sample = draw_sample(
                *self.data(), self.options.queries, self.cfg.privacy.n_anchor, self.options.seed
            )
        return self._sample

    def add_variant(self, variant: ModelVariant) -> str:
        """Register a model variant; its bench is then ``bench(variant.name)``."""
        self._variants[variant.name] = variant
        return variant.name

    def bench(self, key: int | str) -> Bench:
        """The bench of a bit length (int) or of a registered variant (its name)."""
        if key not in self._benches:
            if isinstance(key, str):
                if key not in self._variants:
                    raise ValueError(f"unknown model variant {key!r}; known: {sorted(self._variants)}")
                variant = self._variants[key]
                vcfg = variant_config(self.cfg, variant)
                data = _open_data(vcfg) if variant.own_data else self.data()
                self._benches[key] = self._load_bench(key, variant_model(self.cfg, variant), vcfg, data)
            else:
                self._benches[key] = self._load_bench(
                    key, model_for_bits(self.cfg, key), self.cfg, self.data()
                )
        return self._benches[key]

    def _load_bench(
        self, key: int | str, model: HashNet, cfg: Config, data: tuple[ImageList, Splits]
    ) -> Bench:
        images, splits = data
        _check_same_list(self.data()[0], images)
        model = model.to(self.device).eval()
        kw = dict(batch_size=cfg.index.batch_size, workers=cfg.index.workers, device=self.device)
        if cfg.model.freeze_backbone:
            feats = cached_features(
                model, images, splits.database, cfg.work_dir / "features", desc="database features", **kw
            )
            db_codes = head_codes(model, feats)
        else:
            db_codes = encode_images(model, images, splits.database, desc=f"hash database ({key})", **kw)
        sample = self.sample()
        ds = ImageDataset(images, sample.index, model.image_size)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        codes = np.concatenate([model.encode(b.to(self.device)) for b in x.split(self.options.batch_size)])
        targets = {
            "p2s": np.concatenate([anchor_code(db_codes[rows]) for rows in sample.anchor_rows]),
            "p2p": db_codes[sample.p2p_row].copy(),
            "complement": untargeted_target(codes),
        }
        return Bench(key, model, db_codes, images.labels[splits.database], splits.database, x, codes, targets)

    def protect(
        self,
        key: int | str,
        method: str,
        target: str,
        eps: float,
        *,
        steps: int | None = None,
        queries: int | None = None,
        early_stop: bool = True,
    ) -> Outcome:
        """Run (or recall) ``method`` toward ``target`` codes on the first ``queries`` queries.

        With ``early_stop`` (tables) PGD attacks stop once an image's code equals its target and
        hold its trace at the final distance (the Result contract); without it (Figure 2, as
        DHTA runs) every image takes every step. The noise baseline always perturbs, once.
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
        key_ = (key, method, target, round(eps, 8), steps, early_stop or method == "noise", n)
        if key_ not in self._outcomes:
            self._outcomes[key_] = self._run(key, method, target, eps, steps, n, early_stop)
        return self._outcomes[key_]

    def _run(
        self, key: int | str, method: str, target: str, eps: float, steps: int, n: int, early_stop: bool
    ) -> Outcome:
        bench, p = self.bench(key), self.cfg.privacy
        parts = []
        batches = range(0, n, self.options.batch_size)
        for start in tqdm(batches, desc=f"{method} {target} {key} eps {eps:.3f}", unit="batch", leave=False):
            stop = min(start + self.options.batch_size, n)
            # a seed per batch: the noise baseline draws fresh noise for every batch, reproducibly
            attack = make_attack_for(
                method,
                bench.model,
                p,
                eps=eps,
                steps=steps,
                seed=self.options.seed + start,
                early_stop=early_stop,
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

    def map_own(self, key: int | str, codes: np.ndarray) -> MapResult:
        """MAP of codes of the first len(codes) queries against their own labels."""
        b = self.bench(key)
        labels = self.sample().labels[: len(codes)]
        return mean_average_precision(codes, labels, b.db_codes, b.db_labels, b.db_ids, self.topk)

    def t_map(self, key: int | str, codes: np.ndarray) -> MapResult:
        """t-MAP of codes of the first len(codes) queries against their target label vectors."""
        b = self.bench(key)
        targets = self.sample().target_labels[: len(codes)]
        return t_map(codes, targets, b.db_codes, b.db_labels, b.db_ids, self.topk)

    def provenance(self) -> str:
        """The command that wrote a table, for its notes (``EvalOptions.command``)."""
        cmd = self.options.command or "evaluation.run (Python API)"
        return f"Written by `{cmd}`."

    def write_protocol(self, out_dir: Path, name: str) -> Path:
        """<name>_queries.json: which queries and targets were used, for provenance and re-checks."""
        images, _ = self.data()
        s = self.sample()
        path = Path(out_dir) / f"{name}_queries.json"
        names = images.label_names
        path.write_text(
            json.dumps(
                {
                    "command": self.options.command,
                    "seed": self.options.seed,
                    "n_anchor": self.cfg.privacy.n_anchor,
                    "map_topk": self.topk,
                    "multi_label": s.multi_label,
                    "query_index": s.index.tolist(),
                    "target_labels": [[names[j] for j in np.flatnonzero(v)] for v in s.target_labels],
                    "anchor_ids": self.data()[1].database[s.anchor_rows].tolist(),
                    "p2p_id": self.data()[1].database[s.p2p_row].tolist(),
                },
                indent=1,
            )
        )
        return path


def _open_data(cfg: Config) -> tuple[ImageList, Splits]:
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    return images, make_splits(images, cfg.data, cfg.work_dir / "splits.json")


def _check_same_list(reference: ImageList, images: ImageList) -> None:
    """A variant with its own copy of the data must list the same images, so that the query
    sample (indices into the list) means the same images."""
    if images is reference:
        return
    if images.paths != reference.paths or not np.array_equal(images.labels, reference.labels):
        raise ValueError(f"{images.root} does not list the same images as {reference.root}")


def open_workbench(
    cfg: Config, out_dir: Path, options: EvalOptions | None, workbench: Workbench | None, name: str
) -> tuple[Workbench, Path]:
    """The shared workbench (a new one unless given) and the created output folder."""
    wb = workbench if workbench is not None else Workbench(cfg, options or EvalOptions())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wb.write_protocol(out, name)
    return wb, out
