"""The user's side of hashveil: protect images locally, send only the protected ones.

The client speaks HTTP to the search server, as a real client would, and never imports the
server's code. It fetches the model card and weights once, checks their sha256, and runs the
protection (RNM by default) on the user's machine, so the original never leaves it. What it asks
the server is the same for every user and every protection (the model card, the weights and the
anchor pool, the last two once per model); the target label and anchor items are drawn here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from privacy.attacks import Noise, from_config
from privacy.metrics import linf, psnr
from privacy.pool import AnchorPool
from privacy.presets import check_mode
from privacy.remote import RemoteService
from privacy.targets import carrier_target, draw_target_label, jitter, rng_from, untargeted_target
from retrieval.core.codes import hamming, to_hex
from retrieval.core.config import PrivacyConfig
from retrieval.core.imaging import to_png
from retrieval.core.model import HashNet

log = logging.getLogger(__name__)


@dataclass
class Protected:
    """One protected image and how the protection went."""

    image: torch.Tensor  # (3, H, W) in [0, 1], on the 8-bit grid
    code: np.ndarray  # (K/8,) code of the protected image
    target_code: np.ndarray  # (K/8,)
    target_label: str | None
    iterations: int
    distance: int  # Hamming distance to the target after protection
    psnr: float
    linf: float
    trace: np.ndarray  # Hamming distance to the target per iteration

    def png(self) -> bytes:
        return to_png(self.image)

    def summary(self) -> dict:
        return {
            "target_label": self.target_label,
            "target_code": to_hex(self.target_code),
            "code": to_hex(self.code),
            "iterations": self.iterations,
            "distance": self.distance,
            "psnr_db": round(self.psnr, 2),
            "linf_255": round(self.linf * 255, 2),
        }


class Protector:
    """Chooses targets and runs the protection, all on the user's machine.

    Targets come from the anchor pool (codes of every label, fetched once) and ``rng``: fresh OS
    entropy unless ``cfg.seed`` is set, so neither the target label nor the anchor items can be
    predicted by someone running the same client. Only codes of database items are needed,
    never their images.
    """

    def __init__(
        self, model: HashNet, cfg: PrivacyConfig, pool: AnchorPool, rng: np.random.Generator | None = None
    ) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.pool = pool
        self.rng = rng if rng is not None else rng_from(cfg.seed)
        self.attack = from_config(cfg, model)

    def likely_label(self, code: np.ndarray) -> str | None:
        """What the server would infer from ``code``, estimated locally from the anchor pool."""
        return self.pool.likely_label(code)

    def target_for(self, own_code: np.ndarray, target_label: str | None) -> tuple[np.ndarray, str]:
        """Semantic mode: a target label (given, or drawn from the prior without the image's own
        likely label) and the P2S anchor of a fresh random subset of its pool items, with
        ``cfg.target_jitter`` random bits flipped. (1, K/8)."""
        eligible = self.pool.eligible(self.cfg.n_anchor)
        if target_label is None:
            if not eligible:
                raise ValueError(
                    f"no label has the {self.cfg.n_anchor} database items an anchor needs "
                    f"(privacy.n_anchor) in the anchor pool; counts: {self.pool.label_counts}"
                )
            target_label = draw_target_label(self.likely_label(own_code), eligible, self.rng)
        elif target_label not in self.pool.label_counts:
            raise ValueError(
                f"unknown target label {target_label!r}; known: {sorted(self.pool.label_counts)}"
            )
        anchor = self.pool.draw_anchor(target_label, self.cfg.n_anchor, self.rng)
        return jitter(anchor, self.cfg.target_jitter, self.rng), target_label

    def protect(
        self,
        image: torch.Tensor,
        mode: str = "semantic",
        *,
        target_label: str | None = None,
        private: torch.Tensor | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Protected:
        """Protect one image (3, H, W) in [0, 1]; ``on_step(k, distance)`` follows the progress.

        semantic: push toward the anchor of another label (``target_label`` or a random one);
        untargeted: push toward the complement of its own code; carrier: push ``image`` (the
        carrier) toward the code of ``private``, which is computed here and never sent.
        """
        report = None if on_step is None else (lambda k, dist: on_step(k, int(dist[0])))
        privates = None if private is None else private.unsqueeze(0)
        return self._protect(image.unsqueeze(0), mode, target_label, privates, report)[0]

    def protect_batch(
        self,
        images: torch.Tensor,
        mode: str = "semantic",
        *,
        target_label: str | None = None,
        private: torch.Tensor | None = None,
    ) -> list[Protected]:
        """Protect a batch (n, 3, H, W) at once (faster per image); each image draws its own
        target. ``private`` (carrier mode) is (n, 3, H', W'), one private image per carrier."""
        return self._protect(images, mode, target_label, private, None)

    def _protect(self, images, mode, target_label, private, report) -> list[Protected]:
        check_mode(mode)
        x = images.to(self.model.device)  # the attack runs where the model is
        own = self.model.encode(x)
        labels: list[str | None] = [None] * len(x)
        if mode == "semantic":
            drawn = [self.target_for(code, target_label) for code in own]
            target = np.concatenate([t for t, _ in drawn])
            labels = [label for _, label in drawn]
        elif mode == "untargeted":
            target = untargeted_target(own)
        else:
            if private is None or len(private) != len(x):
                raise ValueError(
                    "carrier mode needs the private image whose results to retrieve, one per carrier"
                )
            target = carrier_target(self.model, private)
        if isinstance(self.attack, Noise):  # the one attack that draws: from this protector's rng
            self.attack.seed = int(self.rng.integers(2**63))
        result = self.attack(x, target, on_step=report)
        dist = hamming(result.codes, target).diagonal()
        quality = psnr(result.images, x), linf(result.images, x)
        return [
            Protected(
                image=result.images[i].cpu(),
                code=result.codes[i],
                target_code=target[i],
                target_label=labels[i],
                iterations=int(result.iterations[i]),
                distance=int(dist[i]),
                psnr=float(quality[0][i]),
                linf=float(quality[1][i]),
                trace=result.trace[:, i].cpu().numpy(),
            )
            for i in range(len(x))
        ]


def connect(
    server_url: str, cfg: PrivacyConfig, cache_dir: Path, device: str = "cpu", *, verify: bool | str = True
) -> tuple[Protector, RemoteService]:
    """A Protector on a server's model (downloaded once, sha256-checked, pinned when
    ``cfg.model_sha256`` is set) and its anchor pool (codes only, fetched once); both cached in
    ``cache_dir`` across runs.

    ``verify``: an https:// server's certificate check, True or a CA bundle file (requests').
    """
    server = RemoteService(server_url, verify=verify)
    model, card = server.model(cache_dir, device, pinned=cfg.model_sha256)
    return Protector(model, cfg, server.anchor_pool(cfg.anchor_pool, cache_dir, card.sha256)), server
