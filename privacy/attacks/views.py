"""What a server may do to an upload, as the attack sees it: robust protection's views.

A plain protection reaches its target on the exact bytes sent; a server that re-encodes or
resizes the upload first sees other pixels. Robust protection optimises over those views
(expectation over transformations, EOT) and stops on what the server will see:

- **Checked views** (``checks``, by default JPEG quality 60, WebP quality 80 and a 0.5x resize,
  plus the upload as sent): in the forward pass each is the real Pillow transformation of the 8-bit image
  (:mod:`privacy.reencode`, as a server would apply it), so the stopping rule holds on exactly
  what such a server computes. An image is done only when its code is at the target in every
  checked view. Check the harshest setting of each codec to be covered: a protection that holds
  after JPEG 60 mostly holds after JPEG 75-95 too, not after JPEG 50 (README, *Robust protection*).
- **A random view** per step (``random_views``): JPEG at a quality drawn from [70, 95] or a resize
  by a factor drawn from [0.5, 1] and back, so the protection does not fit only the checked
  settings.

Gradients: the real codec has none, so each view's backward pass goes through a differentiable
stand-in: kornia's differentiable JPEG for JPEG views (``jpeg_grad="kornia"``) or the identity
(``"identity"``, BPDA), and torch's antialiased bicubic resize for resize views. The forward
value is always the real transformation: ``stand_in + (real - stand_in).detach()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from privacy.reencode import describe, transform_tensor

JPEG_GRADS = ("kornia", "identity")
RANDOM_JPEG = (70, 95)  # quality range of the random JPEG view
RANDOM_SCALE = (0.5, 1.0)  # factor range of the random resize view


def check_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names of server transformations (ValueError for an unknown one or for "sent")."""
    for name in names:
        if name == "sent":
            raise ValueError("the upload as sent is always checked; name transformations only")
        describe(name)
    return names


@dataclass(frozen=True)
class ServerViews:
    """The views a robust protection optimises and checks; view 0 is always the upload as sent."""

    checks: tuple[str, ...] = ("jpeg60", "webp80", "resize0.5")
    random_views: int = 1
    random_kinds: tuple[str, ...] = ("jpeg", "resize")
    jpeg_grad: str = "kornia"
    seed: int | None = None  # the random views' draws (None: fresh entropy)

    def __post_init__(self) -> None:
        check_names(self.checks)
        if self.jpeg_grad not in JPEG_GRADS:
            raise ValueError(f"jpeg_grad must be one of {JPEG_GRADS}; got {self.jpeg_grad!r}")
        if not isinstance(self.random_views, int) or self.random_views < 0:
            raise ValueError(f"random_views must be an int >= 0; got {self.random_views!r}")

    @property
    def checked(self) -> int:
        """How many leading views (the upload as sent, then ``checks``) form the stopping rule."""
        return 1 + len(self.checks)

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Views of a batch on the 8-bit grid. Shape: (m, 3, H, W) -> (V, m, 3, H, W)."""
        views = [x] + [self._view(name, x) for name in self.checks]
        for _ in range(self.random_views):
            kind = self.random_kinds[int(rng.integers(len(self.random_kinds)))]
            if kind == "resize":
                views.append(self._view(f"resize{rng.uniform(*RANDOM_SCALE):.3f}", x))
            else:
                views.append(self._view(f"{kind}{int(rng.integers(*RANDOM_JPEG, endpoint=True))}", x))
        return torch.stack(views)

    def _view(self, name: str, x: torch.Tensor) -> torch.Tensor:
        real = torch.stack([transform_tensor(name, xi) for xi in x.detach()]).to(x)
        jpeg = re.fullmatch(r"jpeg(\d+)", name)
        if jpeg and self.jpeg_grad == "kornia":
            stand_in = _kornia_jpeg(x, int(jpeg.group(1)))
        elif name.startswith("resize"):
            stand_in = _torch_resize(x, float(name.removeprefix("resize")))
        else:  # BPDA: the identity's gradient
            stand_in = x
        return stand_in + (real - stand_in).detach()


def _kornia_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    q = torch.full((x.shape[0],), float(quality), device=x.device, dtype=x.dtype)
    return jpeg_codec_differentiable(x, q).clamp(0, 1)


def _torch_resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = (max(1, int(h * scale)), max(1, int(w * scale)))
    down = F.interpolate(x, size=small, mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(down, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
