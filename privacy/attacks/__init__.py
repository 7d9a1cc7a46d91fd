"""User-side attacks on a hash model, one per module, one contract (privacy.attacks.base).

``make_attack("rnm", model, eps=8/255, steps=100, variant="margin")`` builds one by name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from privacy.attacks.base import Attack, Result
from privacy.attacks.noise import Noise
from privacy.attacks.rnm import RNM
from privacy.attacks.tanh import Tanh

ATTACKS: dict[str, type[Attack]] = {"rnm": RNM, "tanh": Tanh, "noise": Noise}


def make_attack(name: str, model: nn.Module, **kw: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword arguments ``kw``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name](model, **kw)


__all__ = ["ATTACKS", "Attack", "Noise", "RNM", "Result", "Tanh", "make_attack"]
