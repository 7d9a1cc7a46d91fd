"""Traditional obfuscations, the comparison of Huang et al. 2022, Figure 3 (and Sec. 2.1).

Mosaic, brightness, transparency, Gaussian noise and blur: each ``fn(images, strength)`` maps
a pixel batch (n, 3, H, W) in [0, 1] to one of the same shape in [0, 1], vectorised in torch.
They are not eps-bounded and not part of the attack contract; they show how much visible
damage it takes to move a hash code without an adversarial perturbation.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F


def _check(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor (n, C, H, W); got "
            f"{getattr(images, 'shape', type(images).__name__)}"
        )
    return images


def mosaic(images: torch.Tensor, block: float) -> torch.Tensor:
    """Pixelate: each ``block`` x ``block`` tile (from the top-left) takes its mean colour.

    Edge tiles that the image cuts short average only their own pixels.
    """
    images = _check(images)
    if int(block) != block or block < 1:
        raise ValueError(f"block must be an int >= 1; got {block}")
    b = int(block)
    h, w = images.shape[-2:]
    pooled = F.avg_pool2d(images, b, stride=b, ceil_mode=True)
    return pooled.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)[..., :h, :w]


def brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale every pixel by ``factor`` >= 0 (1 = unchanged) and clip to [0, 1]."""
    if not factor >= 0:
        raise ValueError(f"factor must be >= 0; got {factor}")
    return (_check(images) * factor).clamp(0.0, 1.0)


def transparency(images: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend with white: (1 - alpha) x + alpha; ``alpha`` in [0, 1] (0 = unchanged, 1 = white)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    return (1 - alpha) * _check(images) + alpha


def gaussian_noise(images: torch.Tensor, sigma: float, *, seed: int | None = None) -> torch.Tensor:
    """Add N(0, sigma^2) per pixel and clip to [0, 1]; ``seed`` makes it repeatable."""
    images = _check(images)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    noise = torch.randn(images.shape, generator=gen).to(images)
    return (images + sigma * noise).clamp(0.0, 1.0)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of std ``sigma`` pixels, radius ceil(3 sigma), reflect padding."""
    images = _check(images)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    radius = min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1)
    if sigma == 0 or radius < 1:
        return images.clone()
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    ch = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(ch, 1, 1, -1), groups=ch)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(ch, 1, -1, 1), groups=ch)
    return out.clamp(0.0, 1.0)


OBFUSCATIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "mosaic": mosaic,
    "brightness": brightness,
    "transparency": transparency,
    "gaussian_noise": gaussian_noise,
    "blur": blur,
}
