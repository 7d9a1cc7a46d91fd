"""Central similarity hashing (CSQ, Yuan et al. CVPR 2020): a hash model trained end to end
from labelled pixels alone, in minutes on a CPU.

Each label gets a random hash centre (a {-1, +1} vector of K bits); every relaxed output is pulled
toward its item's centre (the signed sum of its labels' centres) by binary cross-entropy, plus a
quantisation term that keeps outputs away from 0. Used by the client's surrogate model
(:mod:`privacy.surrogate`) and by the audit's attacker who trains a second model of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from retrieval.core.config import ModelConfig
from retrieval.core.model import HashNet


@dataclass(frozen=True)
class CSQSettings:
    """How a CSQ model is trained."""

    backbone: str = "small_cnn"
    image_size: int = 28
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    quantization: float = 0.1  # weight of (|u| - 1)^2, which keeps outputs away from 0
    seed: int = 0


def hash_centres(n_labels: int, hash_bits: int, seed: int) -> torch.Tensor:
    """One random {-1, +1} centre per label, drawn from ``seed``. Shape: (L, K) float32."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.choice([-1.0, 1.0], size=(n_labels, hash_bits))).float()


def item_centres(labels: np.ndarray, centres: torch.Tensor) -> torch.Tensor:
    """Each item's target: the sign of the sum of its labels' centres (a tie -> +1).
    Shape: labels (n, L) multi-hot, centres (L, K) -> (n, K) {-1, +1}."""
    s = torch.as_tensor(np.asarray(labels, dtype=np.float32)) @ centres
    return (s >= 0).float() * 2 - 1


def train_csq(
    pixels: torch.Tensor, labels: np.ndarray, hash_bits: int, s: CSQSettings, desc: str
) -> tuple[HashNet, torch.Tensor]:
    """A ``s.backbone`` hash model trained with CSQ on ``pixels`` (n, 3, S, S) uint8 and multi-hot
    ``labels`` (n, L), and the label centres it was pulled toward (L, K). Seeded by ``s.seed``."""
    if len(pixels) != len(labels) or not len(pixels):
        raise ValueError(f"CSQ needs as many labels as images (>= 1); got {len(pixels)} and {len(labels)}")
    torch.manual_seed(s.seed)
    model = HashNet(
        ModelConfig(backbone=s.backbone, hash_bits=hash_bits, image_size=s.image_size), load_pretrained=False
    )
    centres = hash_centres(np.shape(labels)[1], hash_bits, s.seed)
    target = (item_centres(labels, centres) > 0).float()  # (n, K) bits of each item's centre
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(s.seed)
    model.train()
    for _ in tqdm(range(s.epochs), desc=desc, unit="epoch"):
        for rows in torch.randperm(len(pixels), generator=gen).split(s.batch_size):
            u = model(pixels[rows].float() / 255)
            loss = F.binary_cross_entropy_with_logits(u, target[rows])
            loss = loss + s.quantization * (u.abs() - 1).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), centres
