"""Image-quality measures of a protection: PSNR (Huang et al. 2022, Figure 3) and L_inf.

Both take two pixel batches in [0, 1] of the same shape (n, ...) and return one value per image.
"""

from __future__ import annotations

import torch

PSNR_CAP_DB = 100.0  # identical images: MSE floored at 1e-10, i.e. 100 dB instead of inf


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"images must be batches (n, ...) of one shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) in dB per image, peak 1; capped at PSNR_CAP_DB. Shape: (n, ...) -> (n,)."""
    _check_pair(a, b)
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1)
    floor = 10.0 ** (-PSNR_CAP_DB / 10)
    return (10 * torch.log10(1.0 / mse.clamp_min(floor))).to(torch.float32)


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest absolute pixel difference per image. Shape: (n, ...) -> (n,)."""
    _check_pair(a, b)
    return (a - b).abs().flatten(1).amax(dim=1)
