"""User-side attacks on a hash model, one per module, one contract (privacy.attacks.base).

``from_config(cfg.privacy, model)`` builds the configured one; ``make_attack("rnm", model,
eps=8/255, steps=100, variant="margin")`` builds one by name with explicit settings.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from privacy.attacks.base import Attack, Result
from privacy.attacks.noise import Noise
from privacy.attacks.rnm import RNM
from privacy.attacks.tanh import Tanh
from privacy.attacks.views import ServerViews
from retrieval.core.config import PrivacyConfig

ATTACKS: dict[str, type[Attack]] = {"rnm": RNM, "tanh": Tanh, "noise": Noise}


def make_attack(name: str, model: nn.Module, **kw: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword arguments ``kw``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name](model, **kw)


def from_config(cfg: PrivacyConfig, model: nn.Module, **overrides: Any) -> Attack:
    """The attack ``cfg.method`` with the privacy config's settings; ``overrides`` win.

    The one mapping from config keys to attack arguments: eps, steps and step_size for every
    method, step_rule for the PGD methods, the RNM reading, margin and robust views for RNM.
    """
    kw: dict[str, Any] = {"eps": cfg.eps, "steps": cfg.steps, "step_size": cfg.step_size}
    if cfg.method in ("rnm", "tanh"):
        kw["step_rule"] = cfg.step_rule
    if cfg.method == "rnm":
        kw.update(variant=cfg.rnm_variant, margin=cfg.margin)
        if cfg.robust:
            kw["views"] = ServerViews(cfg.robust_checks, seed=cfg.seed if cfg.seed >= 0 else None)
    return make_attack(cfg.method, model, **{**kw, **overrides})


__all__ = ["ATTACKS", "Attack", "Noise", "RNM", "Result", "Tanh", "from_config", "make_attack"]
