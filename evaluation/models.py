"""The models an evaluation attacks: the trained one, one per other bit length, and the variants
of the convergence-versus-scale experiment (same codes at a larger output scale, a head trained
without the quantisation term, a small CNN trained end to end).

Trained models live in work_dir/eval/models/<name> and are reused while their model card
still matches the settings that made them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from index_builder.dpsh import card_matches, train
from retrieval.core.config import Config, override
from retrieval.core.model import HashNet, load_checkpoint, read_card

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVariant:
    """A model of the convergence-versus-scale experiment.

    ``changes`` are config overrides (sections -> keys) for training it; none means the trained
    model of the config. ``scale`` multiplies its last layer (C -> scale * C: the same codes,
    larger relaxed outputs). ``own_data`` trains it in its own work folder (a model at another
    image size exports its own copy of the images, and must not touch the shared splits).
    """

    name: str
    description: str
    changes: dict = field(default_factory=dict)
    scale: float = 1.0
    own_data: bool = False


def model_for_bits(cfg: Config, bits: int) -> HashNet:
    """The trained model at cfg's length, else a model of ``bits`` trained with cfg's settings."""
    if bits == cfg.model.hash_bits:
        model, card = load_checkpoint(cfg.work_dir / "model")
        if card.config and not card_matches(card.config, cfg):
            log.warning(
                "work_dir/model was trained with other settings than this config; evaluating it anyway"
            )
    else:
        model = trained_model(
            override(cfg, model={"hash_bits": bits}), cfg.work_dir / "eval" / "models" / f"{bits}bits"
        )
    if model.hash_bits != bits:
        raise ValueError(f"the model for {bits} bits has {model.hash_bits}-bit codes")
    return model


def trained_model(cfg: Config, model_dir: Path) -> HashNet:
    """The model of ``cfg`` in ``model_dir``, trained there first unless its card matches cfg."""
    if not _checkpoint_matches(cfg, model_dir):
        log.info("training a model for the evaluation in %s", model_dir)
        train(cfg, model_dir=model_dir)
    return load_checkpoint(model_dir)[0]


def variant_config(cfg: Config, variant: ModelVariant) -> Config:
    """The training config of ``variant`` (its own work folder when ``own_data``)."""
    out = override(cfg, **variant.changes) if variant.changes else cfg
    if variant.own_data:
        out = override(out, paths={"work_dir": variant_dir(cfg, variant) / "work"})
    return out


def variant_dir(cfg: Config, variant: ModelVariant) -> Path:
    return cfg.work_dir / "eval" / "models" / variant.name


def variant_model(cfg: Config, variant: ModelVariant) -> HashNet:
    """The variant's model: trained (or reused), then scaled."""
    if variant.changes:
        model = trained_model(variant_config(cfg, variant), variant_dir(cfg, variant))
    else:
        model = model_for_bits(cfg, cfg.model.hash_bits)
    return scaled(model, variant.scale) if variant.scale != 1 else model


def scaled(model: HashNet, factor: float) -> HashNet:
    """A copy of ``model`` whose relaxed outputs are ``factor`` times larger: same codes (factor > 0)."""
    if not factor > 0:
        raise ValueError(f"scale factor must be > 0; got {factor!r}")
    out = copy.deepcopy(model)
    last = out.head[-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return out


def _checkpoint_matches(cfg: Config, model_dir: Path) -> bool:
    try:
        card = read_card(model_dir)
    except (FileNotFoundError, ValueError):
        return False
    return card_matches(card.config, cfg)
