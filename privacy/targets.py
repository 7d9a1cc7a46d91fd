"""Target codes for the user-side attacks (Huang et al. 2022, Sec. 5.2; DHTA, Bai et al. 2020).

Every code in and out is packed uint8 (n, K/8); a single target is a (1, K/8) row.
- P2S: the anchor code, sign of the sum of n_anchor codes of the target label (DHTA eq. 5).
- P2P: the code of one item of the target label.
- untargeted (Table 3): the complement of the image's own code, the farthest code there is.
- carrier (content privacy, Figure 1): the private image's own code, computed locally, so a
  carrier image can be pushed to it and the private image is never uploaded.

The user's client draws with :func:`rng_from`: fresh OS entropy unless the user set a seed, so
an attacker who runs the same client cannot predict a target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from retrieval.core.codes import as_codes, pack, unpack


def _nonempty(codes: np.ndarray) -> np.ndarray:
    codes = as_codes(codes)
    if codes.shape[0] == 0:
        raise ValueError(f"need at least one code; got shape {codes.shape}")
    return codes


def anchor_code(codes: np.ndarray) -> np.ndarray:
    """P2S anchor: sign of the sum of the codes as {-1, +1}. Shape: (n, K/8) -> (1, K/8).

    A bit whose sum is 0 (possible for even n) is broken toward +1, so the anchor does not
    depend on the order of the codes.
    """
    total = unpack(_nonempty(codes)).sum(dim=0, keepdim=True)
    return pack(total >= 0)


def p2p_target(codes: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """P2P target: one item's code, drawn with ``rng`` (the first one without). (n, K/8) -> (1, K/8)."""
    codes = _nonempty(codes)
    i = 0 if rng is None else int(rng.integers(codes.shape[0]))
    return codes[i : i + 1].copy()


def pick_target_label(
    own_labels: Iterable[str], label_counts: Mapping[str, int], n_anchor: int, rng: np.random.Generator
) -> str:
    """A random label that the query does not carry and that has >= n_anchor items.

    Candidates are sorted before the draw, so a seeded ``rng`` gives the same label every run.
    Raises ValueError when no label qualifies.
    """
    if not isinstance(n_anchor, int) or n_anchor < 1:
        raise ValueError(f"n_anchor must be an int >= 1; got {n_anchor!r}")
    own = set(own_labels)
    candidates = sorted(lab for lab, count in label_counts.items() if lab not in own and count >= n_anchor)
    if not candidates:
        raise ValueError(
            f"no label other than {sorted(own)} has >= {n_anchor} items; counts: {dict(label_counts)}"
        )
    return candidates[int(rng.integers(len(candidates)))]


def rng_from(seed: int | None) -> np.random.Generator:
    """A generator on fresh OS entropy for ``seed`` None or < 0 (``privacy.seed`` unset), else seeded."""
    if seed is None or seed < 0:
        return np.random.default_rng()  # numpy's SeedSequence reads the OS entropy source
    return np.random.default_rng(seed)


def draw_target_label(own_label: str | None, eligible: Mapping[str, int], rng: np.random.Generator) -> str:
    """The user client's target label: drawn from the label prior with only ``own_label`` excluded.

    ``eligible`` maps the labels that can be targets to their database counts (the prior). An
    attacker who knows this rule and sees the target t learns little more than "not t": for a
    true label y, P(t | y) = p(t) / (1 - p(y)), so P(y | t) is proportional to p(y) / (1 - p(y))
    over y != t (uniform over the other labels when the database is balanced), and across many
    uploads the labels that protected queries retrieve follow the database's label mix, as
    plain queries' do. Candidates are sorted first, so a seeded ``rng`` repeats its draws.
    """
    names = sorted(n for n, c in eligible.items() if n != own_label and c > 0)
    if not names:
        raise ValueError(f"no target label other than {own_label!r} is available; eligible: {dict(eligible)}")
    weights = np.array([eligible[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def jitter(code: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """``code`` (1, K/8) with ``bits`` distinct bits, drawn with ``rng``, flipped."""
    signs = unpack(as_codes(code))
    k = signs.shape[1]
    if not 0 <= bits <= k:
        raise ValueError(f"jitter must be an int in [0, {k}] bits; got {bits}")
    signs[0, rng.choice(k, size=bits, replace=False)] *= -1
    return pack(signs)


def untargeted_target(own_code: np.ndarray) -> np.ndarray:
    """Non-targeted protection: the bitwise complement of the image's own code (distance K)."""
    return np.bitwise_not(as_codes(own_code))


def carrier_target(model: nn.Module, private_image: torch.Tensor) -> np.ndarray:
    """Content privacy: the private image's own code, computed on the user's machine.

    Shape: (3, H, W) or (n, 3, H, W) in [0, 1] -> (n, K/8). The model runs in eval mode.
    """
    x = private_image.unsqueeze(0) if private_image.ndim == 3 else private_image
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"private_image must have shape (3, H, W) or (n, 3, H, W); got {tuple(private_image.shape)}"
        )
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"private_image must lie in [0, 1]; got range [{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    was_training = model.training
    model.eval()
    try:
        return model.encode(x)
    finally:
        model.train(was_training)
