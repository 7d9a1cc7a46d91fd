"""Uniform noise in [-eps, eps]: the "Noise" row of Huang et al. 2022, Table 1 (Sec. 5.3).

One draw per image, no model gradient: the baseline that shows a random perturbation of the
same L_inf budget does not move a hash code. Same Result as the PGD attacks: ``iterations`` is
1 (0 for an image already at its target when ``early_stop`` is on: left unchanged), and
``trace`` has two rows, before and after. ``steps`` and ``step_size`` are accepted for the
shared contract and unused.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from privacy.attacks.base import DEFAULTS, Attack, Result, bit_errors, budget
from privacy.attacks.ensemble import Member
from retrieval.core.codes import unpack


class Noise(Attack):
    """x' = x + U[-eps, eps], clipped to [0, 1] and quantised like every attack; ``seed`` fixes
    it, None draws it from fresh OS entropy (never from torch's global generator, whose default
    seed is the same in every process)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = DEFAULTS.eps,
        steps: int = 1,
        step_size: float = DEFAULTS.step_size,
        early_stop: bool = True,
        quantize: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            model, eps=eps, steps=steps, step_size=step_size, early_stop=early_stop, quantize=quantize
        )
        self.seed = seed

    def _run(self, x0: torch.Tensor, targets: np.ndarray, member: Member | None = None) -> Result:
        if member is not None:
            raise ValueError("noise follows no gradient, so it cannot mislead an ensemble member")
        n = x0.shape[0]
        lo, hi = budget(x0, self.eps)
        trace = torch.zeros(2, n, device=x0.device)
        with torch.no_grad():
            start = self._project(x0, lo, hi)
            trace[0] = bit_errors(self.model(start), unpack(targets).to(x0))
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()  # std::random_device
        else:
            gen.manual_seed(self.seed)
        noise = (torch.rand(x0.shape, generator=gen) * 2 - 1).to(x0) * self.eps
        move = trace[0] > 0 if self.early_stop else torch.ones(n, dtype=torch.bool, device=x0.device)
        final = torch.where(move.view(-1, 1, 1, 1), self._project(x0 + noise, lo, hi), start)
        return self._result(final, targets, move.to(torch.int64), trace)
