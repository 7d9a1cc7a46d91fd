"""The one attack contract: batched PGD under an L_inf budget in pixels, with early stop.

Huang et al. 2022, Algorithm 1: x' = clip(x' - step_size * d), projected to the eps ball
around x and to [0, 1], with d = sign(dP/dx') ("sign") or dP/dx' / max|dP/dx'| ("scaled").
Every attack here is built as ``Method(model, *, eps, steps, step_size, ...)`` and called as
``method(images, target_codes) -> Result`` with images in [0, 1] and packed uint8 targets.

Defaults are stated once: every attack class defaults to ``DEFAULTS``, the built-in
``PrivacyConfig`` (eps 8/255, 100 steps, scaled steps of at most 8/255, margin 0), which
config.toml repeats and ``from_config`` applies; nothing else sets a default.

What is reported is what the server will see: the client saves 8-bit PNGs, so the iterate is
evaluated, checked for the stopping rule and returned on the 8-bit grid (``quantize=True``):
each pixel is rounded to k/255 and clipped to the grid points inside its budget
[max(0, x - eps), min(1, x + eps)]. The continuous iterate keeps accumulating the PGD steps,
so step sizes below 1/255 still make progress; gradients are taken at the quantised point.
With inputs on the grid and sign steps of 1/255 quantising changes nothing.
When a budget holds no grid point (eps < 1/510) that pixel stays unquantised, so the eps
bound always holds (up to float rounding, < 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from privacy.attacks.ensemble import Member, member_errors
from privacy.attacks.views import ServerViews
from retrieval.core.codes import as_codes, unpack
from retrieval.core.config import PrivacyConfig

DEFAULTS = PrivacyConfig()  # the one set of attack defaults (module docstring)

GRID = 255.0
_GRID_TOL = 1e-4  # in grid units: absorbs float32 error of x * 255 for x on the grid


@dataclass(frozen=True)
class Result:
    """What an attack returns.

    Shape: images (n, 3, H, W) float in [0, 1], within eps of the input in L_inf;
    codes (n, K/8) uint8 = model.encode(images); iterations (n,) int64 PGD steps taken;
    trace (steps + 1, n) float32 Hamming distance to the target, row 0 before any step,
    repeated after an image stops, last row = distance of ``codes``; reached (n,) bool,
    ``codes`` equal to the target.
    """

    images: torch.Tensor
    codes: np.ndarray
    iterations: torch.Tensor
    trace: torch.Tensor
    reached: torch.Tensor


def to_signs(c: torch.Tensor) -> torch.Tensor:
    """sign(C) as {-1, +1} with 0 -> -1, the convention of ``retrieval.core.codes.pack``."""
    return (c > 0).to(c.dtype) * 2 - 1


def bit_errors(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Hamming distance between sign(C) and {-1, +1} targets. Shape: (n, K), (n, K) -> (n,)."""
    return ((c > 0) != (t > 0)).sum(dim=1).to(torch.float32)


def is_done(c: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    """Stopping rule: sign(C) equals the target and every t_j * c_j >= margin. Shape: (n,) bool."""
    done = bit_errors(c, t) == 0
    if margin > 0:
        done &= (t * c >= margin).all(dim=1)
    return done


def _score(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """How close an iterate is to done, for keeping the best one, in this order: the views
    (V, m, K) whose code is at the target, fewer wrong bits over all views, then the smallest
    t_j c_j over them (the margin). Shape: (m,), float64 so that the orders do not mix."""
    errors = torch.stack([bit_errors(v, t) for v in c]).double()
    at = (errors == 0).sum(0)
    return at * 1e6 - errors.sum(0) * 1e3 + torch.tanh((t * c).amin(dim=(0, 2))).double()


def budget(x0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel feasible interval: the eps ball around ``x0`` intersected with [0, 1]."""
    return (x0 - eps).clamp(0.0, 1.0), (x0 + eps).clamp(0.0, 1.0)


def quantise(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid k/255 while staying inside [lo, hi] (see the module docstring)."""
    lo_q = torch.ceil(lo * GRID - _GRID_TOL) / GRID
    hi_q = torch.floor(hi * GRID + _GRID_TOL) / GRID
    q = torch.minimum(torch.maximum(torch.round(x * GRID) / GRID, lo_q), hi_q)
    return torch.where(lo_q <= hi_q, q, x.clamp(lo, hi))


def budget_levels(eps: float) -> int:
    """The budget an 8-bit image actually gets: whole grey levels, floor(255 eps).

    ``quantise`` keeps each pixel on k/255 inside [x - eps, x + eps], so for a pixel on the grid
    the largest move is floor(255 eps) levels: eps 0.01 is 2/255, 0.032 is 8/255.
    """
    return int(np.floor(eps * GRID + _GRID_TOL))


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a pixel batch: float (n, 3, H, W) in [0, 1]; returns it detached."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(
            f"images must be a float tensor; got {type(images).__name__} {getattr(images, 'dtype', '')}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"images must lie in [0, 1]; got range [{images.min().item():.4g}, {images.max().item():.4g}]"
        )
    return images.detach()


def check_targets(target_codes: np.ndarray, n: int, hash_bits: int) -> np.ndarray:
    """Validate packed targets: uint8 (n, K/8) matching the batch and the model's K."""
    codes = as_codes(target_codes)
    if codes.shape != (n, hash_bits // 8):
        raise ValueError(
            f"target_codes must have shape ({n}, {hash_bits // 8}) for {n} images "
            f"and {hash_bits}-bit codes; got {codes.shape}"
        )
    return codes


STEP_RULES = ("sign", "scaled")


def _direction(grad: torch.Tensor, rule: str) -> torch.Tensor:
    """The PGD step direction: sign(grad) (every pixel moves a full step), or grad scaled so its
    largest entry per image is 1 ("scaled": pixels that matter less move less, for a higher PSNR)."""
    if rule == "sign":
        return grad.sign()
    peak = grad.abs().amax(dim=tuple(range(1, grad.ndim)), keepdim=True)
    return grad / peak.clamp_min(1e-12)


class Attack:
    """Base of every attack: validation, the batched PGD loop with an active set, the Result.

    Subclasses define :meth:`loss`, a per-image loss of the relaxed outputs C (to minimise).
    Images whose code meets the stopping rule leave the active set, so they cost no further
    forward or backward passes. Gradients are taken with ``torch.autograd.grad`` w.r.t. the
    images only; the model's parameters never accumulate ``.grad``.
    """

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
        views: ServerViews | None = None,
    ) -> None:
        if not 0 <= eps <= 1:
            raise ValueError(f"eps must be in [0, 1] (pixels); got {eps}")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0; got {steps!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0; got {step_size}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0; got {margin}")
        self.model = model
        self.eps, self.steps, self.step_size = float(eps), steps, float(step_size)
        if step_rule not in STEP_RULES:
            raise ValueError(f"step_rule must be one of {STEP_RULES}; got {step_rule!r}")
        self.early_stop, self.margin, self.quantize = early_stop, float(margin), quantize
        self.step_rule = step_rule
        self.views = views  # None: the upload as sent only; else robust protection (views.py)
        self._on_step: Callable[[int, torch.Tensor], None] | None = None

    def loss(self, c: torch.Tensor, t: torch.Tensor, step: int) -> torch.Tensor:
        """Per-image loss to minimise. Shape: C (m, K), targets {-1, +1} (m, K) -> (m,)."""
        raise NotImplementedError

    def _project(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return quantise(x, lo, hi) if self.quantize else x.clamp(lo, hi)

    def __call__(
        self,
        images: torch.Tensor,
        target_codes: np.ndarray,
        *,
        on_step: Callable[[int, torch.Tensor], None] | None = None,
        member: Member | None = None,
    ) -> Result:
        """Run the attack. ``on_step(k, distances)``, if given, sees the Hamming distance of every
        image to its target before step k (shape (n,)), e.g. to draw a live convergence curve.
        ``member``: a second model to mislead too, toward its own targets (ensemble protection)."""
        x0 = check_images(images)
        targets = check_targets(target_codes, x0.shape[0], self.model.hash_bits)
        models = [self.model] + ([] if member is None else [member.model])
        was_training = [m.training for m in models]
        for m in models:
            m.eval()
        self._on_step = on_step
        try:
            with torch.inference_mode(False), torch.enable_grad():
                return self._run(x0.clone(), targets, member)
        finally:
            for m, mode in zip(models, was_training):
                m.train(mode)
            self._on_step = None

    def _run(self, x0: torch.Tensor, targets: np.ndarray, member: Member | None = None) -> Result:
        n = x0.shape[0]
        t = unpack(targets).to(x0.device, x0.dtype)
        ts = None if member is None else member.signs(n, x0)
        lo, hi = budget(x0, self.eps)
        adv = x0.clone()
        dist = torch.zeros(n, device=x0.device)
        trace = torch.zeros(self.steps + 1, n, device=x0.device)
        iterations = torch.zeros(n, dtype=torch.int64, device=x0.device)
        active = torch.arange(n, device=x0.device)
        rng = None if self.views is None else self.views.generator()
        checked = 1 if self.views is None else self.views.checked
        best = adv.clone()
        best_score = torch.full((n,), -math.inf, device=x0.device, dtype=torch.float64)
        for k in range(self.steps):
            xq = self._project(adv[active], lo[active], hi[active]).requires_grad_(True)
            cs = self._outputs(xq, rng)
            c = cs[0]
            s = None if member is None else member.model(xq)
            dist[active] = bit_errors(c.detach(), t[active])
            trace[k] = dist
            if self._on_step is not None:
                self._on_step(k, dist.detach().cpu())
            keep = torch.ones(active.numel(), dtype=torch.bool, device=x0.device)
            if self.early_stop:
                seen = cs[:checked].detach()
                keep = ~torch.stack([is_done(v, t[active], self.margin) for v in seen]).all(0)
                score = _score(seen, t[active])
                if s is not None:  # the ensemble: the member's code at its target too
                    keep |= bit_errors(s.detach(), ts[active]) > 0
                    score = score - member_errors(s.detach(), ts[active])
                better = score > best_score[active]
                best[active[better]], best_score[active[better]] = xq.detach()[better], score[better]
            if not keep.any():
                trace[k + 1 :] = dist
                break
            loss = sum(self.loss(v[keep], t[active][keep], k).sum() for v in cs) / len(cs)
            if s is not None:
                loss = loss + self.loss(s[keep], ts[active][keep], k).sum()
            (grad,) = torch.autograd.grad(loss, xq)
            active = active[keep]
            adv[active] = torch.minimum(
                torch.maximum(
                    adv[active] - self.step_size * _direction(grad[keep], self.step_rule), lo[active]
                ),
                hi[active],
            )
            iterations[active] += 1
        final = self._project(adv, lo, hi)
        if self.early_stop and self.steps:  # an image that never met the rule: its best iterate
            final[active] = best[active]
        return self._result(final, targets, iterations, trace)

    def _outputs(self, xq: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        """Relaxed outputs C of every view of the batch, view 0 the upload as sent. Shape: (V, m, K)."""
        if self.views is None:
            return self.model(xq).unsqueeze(0)
        v = self.views(xq, rng)
        return self.model(v.flatten(0, 1)).unflatten(0, v.shape[:2])

    def _result(
        self, final: torch.Tensor, targets: np.ndarray, iterations: torch.Tensor, trace: torch.Tensor
    ) -> Result:
        """Encode the final (quantised) images; the last trace row is their distance."""
        codes = self.model.encode(final)
        d = (unpack(codes) != unpack(targets)).sum(dim=1).to(trace)
        trace[-1] = d
        return Result(final.detach(), codes, iterations, trace, d == 0)
