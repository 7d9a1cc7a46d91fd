"""A second model an attack misleads beside the server's: the ensemble protection's hook.

Each model has its own code space, so each gets its own targets (``privacy.surrogate``). The
attack's loss sums the server model's loss (its views averaged) and this model's loss on its own
relaxed outputs; the stopping rule then asks for both codes at their targets, and an image that
never gets there keeps its best iterate, ranked first by the server's views and then by this
model's bit errors. The upload as sent is what this model sees (no server re-encodings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from retrieval.core.codes import as_codes, unpack


@dataclass(frozen=True, eq=False)
class Member:
    """A model the attack misleads too, and its own packed targets. Shape: (n, K'/8) uint8."""

    model: nn.Module
    target_codes: np.ndarray

    def signs(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """Validated targets as {-1, +1} on ``like``'s device. Shape: (n, K')."""
        codes = as_codes(self.target_codes)
        width = self.model.hash_bits // 8
        if codes.shape != (n, width):
            raise ValueError(
                f"the ensemble member's target_codes must have shape ({n}, {width}); got {codes.shape}"
            )
        return unpack(codes).to(like.device, like.dtype)


def member_errors(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Wrong bits of the member's code, weighted to rank below every server view's bit error in
    the best-iterate score of ``privacy.attacks.base`` (at most 1e3 per view, 10 per bit here)."""
    return ((c > 0) != (t > 0)).sum(dim=1).double() * 10
