"""RNM, the relaxation norm method of Huang et al. 2022 (eq. 12, Algorithm 1), in three readings.

All three use the inner-product loss of eq. 1, L(B, h_t) = -(1/K) B . h_t, at B = sign(C) with
the straight-through rule of eq. 11 (dL/dC := dL/dB = -h_t / K), and the PGD of Algorithm 1.
They differ in the term that shapes C:

- ``"literal"``: eq. 12 as written, P = beta ||C - sign(C)||^2 + L(sign(C), h_t). The penalty
  pulls C toward its *current* sign, which opposes every bit flip: per bit the gradient is
  2 beta (c - sign c) - t / K, which for beta = 1/K vanishes at |c| = 1/2 on the wrong side
  and pushes a wrong bit with |c| < 1/2 away from the target. Kept because it is the paper's.
- ``"proximal"``: the forward-backward splitting of eqs. 8-9. The proximal point is
  p = sign(sign(C) - (1/lambda) dL/dB) = sign(sign(C) + h_t / (lambda K)); for lambda < 1/K
  (default 1/(2K)) it is h_t on every bit, for lambda > 1/K it is sign(C) (the literal
  reading; eq. 11 with lr = 1 is that case). P = beta ||C - p||^2 + L(sign(C), h_t).
- ``"margin"``: a hinge (1/K) sum_j relu(m - t_j c_j) that pushes only the bits still on the
  wrong side or within ``margin`` m of 0, so finished bits cost nothing (m = 0: wrong bits
  only).

``margin`` also sets the stopping rule for every variant: an image is done when each bit of
C(x') lies at least m past 0 on the target's side (m = 0: its code equals the target). With
m > 0 the quadratic readings' penalty turns one-sided, relu(m - p c)^2, so that the margin is
reachable by every reading (the two-sided penalty settles each bit at 1.5, short of m = 2).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from privacy.attacks.base import DEFAULTS, Attack, to_signs
from privacy.attacks.views import ServerViews

VARIANTS = ("literal", "proximal", "margin")


def straight_through_sign(c: torch.Tensor) -> torch.Tensor:
    """sign(C) in the forward pass, identity in the backward pass (eq. 11)."""
    return c + (to_signs(c) - c).detach()


def inner_product_loss(b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 1: L(B, h_t) = -(1/K) B . h_t per image. Shape: (n, K), (n, K) -> (n,)."""
    return -(b * t).sum(dim=1) / b.shape[1]


def literal_loss(
    c: torch.Tensor, t: torch.Tensor, beta: float | None = None, margin: float = 0.0
) -> torch.Tensor:
    """Eq. 12 read literally: beta ||C - sign(C)||^2 + L(sign(C), h_t), straight-through L.

    Shape: C (n, K), targets {-1, +1} (n, K) -> (n,). ``beta`` defaults to 1/K (Sec. 5.3).
    With a margin m > 0 the penalty is one-sided (:func:`_pull`).
    """
    beta = 1.0 / c.shape[1] if beta is None else beta
    return beta * _pull(c, to_signs(c).detach(), margin) + inner_product_loss(straight_through_sign(c), t)


def _pull(c: torch.Tensor, p: torch.Tensor, margin: float) -> torch.Tensor:
    """The quadratic penalty toward the signs ``p``: ||C - p||^2 (eq. 12), or with a margin m > 0
    ||relu(m - p C)||^2, which pulls only the bits short of m on p's side and leaves the bits past
    it alone (the two-sided pull would hold every bit at 1 + 1/(2 beta K) = 1.5, short of m >= 1.5,
    and spend the budget pulling the large bits down). (n, K) -> (n,)."""
    if margin > 0:
        return (F.relu(margin - p * c) ** 2).sum(dim=1)
    return ((c - p) ** 2).sum(dim=1)


def proximal_point(c: torch.Tensor, t: torch.Tensor, lam: float | None = None) -> torch.Tensor:
    """Eq. 9: sign(sign(C) - (1/lambda) dL/dB) with dL/dB = -h_t / K; lambda defaults to 1/(2K).

    A tie (lambda = 1/K on a wrong bit) gives -1, the convention of ``pack``.
    """
    k = c.shape[1]
    lam = 1.0 / (2 * k) if lam is None else lam
    if not lam > 0:
        raise ValueError(f"lam must be > 0; got {lam}")
    return to_signs(to_signs(c) + t / (lam * k))


def proximal_loss(
    c: torch.Tensor,
    t: torch.Tensor,
    beta: float | None = None,
    lam: float | None = None,
    margin: float = 0.0,
) -> torch.Tensor:
    """Eqs. 8-9 with eq. 12's penalty: beta ||C - prox||^2 + L(sign(C), h_t), straight-through L.

    Shape: C (n, K), targets {-1, +1} (n, K) -> (n,). With a margin, one-sided (:func:`_pull`).
    """
    beta = 1.0 / c.shape[1] if beta is None else beta
    p = proximal_point(c.detach(), t, lam)
    return beta * _pull(c, p, margin) + inner_product_loss(straight_through_sign(c), t)


def margin_loss(c: torch.Tensor, t: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Hinge (1/K) sum_j relu(m - t_j c_j): only wrong or too-close bits. (n, K) -> (n,)."""
    return F.relu(margin - t * c).sum(dim=1) / c.shape[1]


class RNM(Attack):
    """Huang et al. 2022, eq. 12 + Algorithm 1; ``variant`` picks the reading (module docstring).

    Defaults are the privacy config's (``privacy.attacks.base.DEFAULTS``): 100 steps (the paper
    reports RNM converging within 100 iterations, Fig. 2), the proximal reading, scaled steps.
    ``beta`` defaults to 1/K (Sec. 5.3), ``lam`` (proximal) to 1/(2K).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = DEFAULTS.eps,
        steps: int = DEFAULTS.steps,
        step_size: float = DEFAULTS.step_size,
        variant: str = DEFAULTS.rnm_variant,
        margin: float = DEFAULTS.margin,
        beta: float | None = None,
        lam: float | None = None,
        early_stop: bool = True,
        quantize: bool = True,
        step_rule: str = DEFAULTS.step_rule,
        views: ServerViews | None = None,
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
            views=views,
        )
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
        if beta is not None and not beta >= 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        if lam is not None and not lam > 0:
            raise ValueError(f"lam must be > 0; got {lam}")
        self.variant, self.beta, self.lam = variant, beta, lam
        losses: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
            "literal": lambda c, t: literal_loss(c, t, self.beta, self.margin),
            "proximal": lambda c, t: proximal_loss(c, t, self.beta, self.lam, self.margin),
            "margin": lambda c, t: margin_loss(c, t, self.margin),
        }
        self._loss = losses[variant]

    def loss(self, c: torch.Tensor, t: torch.Tensor, step: int) -> torch.Tensor:
        return self._loss(c, t)
