"""Tanh (DHTA, Bai et al. ECCV 2020), the baseline of Huang et al. 2022, eq. 2.

Loss -(1/K) tanh(alpha C) . h_t with alpha annealed as in Huang et al. Sec. 5.2: 0.1 for the
first 1000 iterations, then 0.2, 0.3, 0.5, 0.7 and 1.0 for 200 iterations each (2000 in
all). (Sec. 3.2 and 5.4 list 0.2, 0.5, 0.7, 0.9, 1.0 instead; we follow Sec. 5.2.) For another
number of ``steps`` the schedule is scaled proportionally: the switches fall at 50, 60, 70,
80 and 90 % of ``steps``, rounded up (exact for 2000), so alpha = 0.1 for at least half.

Optimised with the same sign-PGD in pixel space as RNM ("We adopted PGD to optimize the Tanh
method and our method"), not DHTA's L2-normalised step. The paper's Tanh runs every
iteration; pass ``early_stop=False`` for that (Figure 2) protocol.
"""

from __future__ import annotations

import torch
from torch import nn

from privacy.attacks.base import Attack

ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SWITCH_TENTHS = (5, 6, 7, 8, 9)  # alpha moves to ALPHAS[i + 1] at SWITCH_TENTHS[i] / 10 of steps
PAPER_STEPS = 2000


def alpha_schedule(step: int, steps: int = PAPER_STEPS) -> float:
    """alpha at 0-based iteration ``step`` of ``steps`` (Huang et al. Sec. 5.2, scaled)."""
    if not 0 <= step < max(steps, 1):
        raise ValueError(f"step must be in [0, {steps}); got {step}")
    passed = sum(step >= -(-tenths * steps // 10) for tenths in SWITCH_TENTHS)
    return ALPHAS[passed]


def tanh_loss(c: torch.Tensor, t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 2: -(1/K) tanh(alpha C) . h_t per image. Shape: (n, K), (n, K) -> (n,)."""
    return -(torch.tanh(alpha * c) * t).sum(dim=1) / c.shape[1]


class Tanh(Attack):
    """DHTA's relaxation (Huang et al. eq. 2) under sign-PGD; 2000 steps by default."""

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 8 / 255,
        steps: int = PAPER_STEPS,
        step_size: float = 1 / 255,
        early_stop: bool = True,
        margin: float = 0.0,
        quantize: bool = True,
        step_rule: str = "sign",
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
        return tanh_loss(c, t, alpha_schedule(step, self.steps))
