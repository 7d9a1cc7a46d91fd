"""Tanh (DHTA, Bai et al. ECCV 2020), the baseline of Huang et al. 2022, eq. 2.

Loss -(1/K) tanh(alpha C) . h_t with DHTA's alpha schedule, in absolute iterations as in
DHTA's code (``get_alpha``) and Huang et al. Sec. 5.2: 0.1 for iterations 0-999, then 0.2,
0.3, 0.5, 0.7 and 1.0 for 200 iterations each (1000-1999), 1.0 from then on. (Sec. 3.2 and
5.4 list 0.2, 0.5, 0.7, 0.9, 1.0 instead; we follow Sec. 5.2 and DHTA's code.) A run of fewer
than 2000 steps is a truncated DHTA run, not a squeezed one: with ``steps`` <= 1000, or with
early stop before iteration 1000, alpha is 0.1 throughout. DHTA's own horizon is
``PAPER_STEPS`` = 2000 without early stop; ``evaluation`` runs it so (``tanh_steps``, Figure 2).

Optimised with the same PGD in pixel space as RNM ("We adopted PGD to optimize the Tanh
method and our method"), not DHTA's raw gradient step; the step rule, step size, eps and
default ``steps`` are the privacy defaults of ``retrieval.core.config.PrivacyConfig``
(``privacy.attacks.base``), the same for every attack.
"""

from __future__ import annotations

import torch
from torch import nn

from privacy.attacks.base import DEFAULTS, Attack

ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SWITCHES = (1000, 1200, 1400, 1600, 1800)  # alpha moves to ALPHAS[i + 1] at iteration SWITCHES[i]
PAPER_STEPS = 2000


def alpha_schedule(step: int) -> float:
    """alpha at 0-based iteration ``step`` (DHTA's ``get_alpha``; Huang et al. Sec. 5.2)."""
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0; got {step!r}")
    return ALPHAS[sum(step >= s for s in SWITCHES)]


def tanh_loss(c: torch.Tensor, t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 2: -(1/K) tanh(alpha C) . h_t per image. Shape: (n, K), (n, K) -> (n,)."""
    return -(torch.tanh(alpha * c) * t).sum(dim=1) / c.shape[1]


class Tanh(Attack):
    """DHTA's relaxation (Huang et al. eq. 2) under the shared PGD; DHTA's schedule (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = DEFAULTS.eps,
        steps: int = DEFAULTS.steps,
        step_size: float = DEFAULTS.step_size,
        early_stop: bool = True,
        margin: float = DEFAULTS.margin,
        quantize: bool = True,
        step_rule: str = DEFAULTS.step_rule,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            steps=steps,
            step_size=step_size,
            early_stop=early_stop,
            margin=margin,
            quantize=quantize,
            step_rule=step_rule,
        )

    def loss(self, c: torch.Tensor, t: torch.Tensor, step: int) -> torch.Tensor:
        return tanh_loss(c, t, alpha_schedule(step))
