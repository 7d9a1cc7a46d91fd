"""The user's side of hashveil: protect images locally, send only the protected ones.

The client speaks HTTP to the search server, as a real client would, and never imports the
server's code. It fetches the model card and weights once, checks their sha256, and runs the
protection (RNM by default) on the user's machine, so the original never leaves it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from privacy.attacks import from_config
from privacy.metrics import linf, psnr
from privacy.presets import check_mode
from privacy.remote import RemoteService
from privacy.targets import anchor_code, carrier_target, pick_target_label, untargeted_target
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

    ``anchors(label) -> packed codes`` and ``label_counts`` come from the server's API or a
    local store; only codes of database items are needed, never their images.
    """

    def __init__(
        self,
        model: HashNet,
        cfg: PrivacyConfig,
        anchors: Callable[[str], np.ndarray],
        label_counts: dict[str, int],
    ) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.label_counts = label_counts
        self._anchors = anchors
        self._anchor_codes: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(cfg.seed)
        self.attack = from_config(cfg, model)

    def anchor(self, label: str) -> np.ndarray:
        """The P2S anchor code of a label (sign of the sum of n_anchor database codes)."""
        if label not in self._anchor_codes:
            self._anchor_codes[label] = anchor_code(self._anchors(label))[0]
        return self._anchor_codes[label]

    def likely_label(self, code: np.ndarray) -> str:
        """The label whose anchor is nearest to ``code``: what the server would infer, computed locally."""
        usable = [l for l, c in self.label_counts.items() if c >= self.cfg.n_anchor]
        if not usable:
            raise ValueError(
                f"no label has the {self.cfg.n_anchor} database items an anchor needs "
                f"(privacy.n_anchor); counts: {self.label_counts}"
            )
        anchors = np.stack([self.anchor(l) for l in usable])
        return usable[int(hamming(code.reshape(1, -1), anchors)[0].argmin())]

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
        check_mode(mode)
        x = image.unsqueeze(0).to(self.model.device)  # the attack runs where the model is
        own = self.model.encode(x)[0]
        label = None
        if mode == "semantic":
            label = target_label or pick_target_label(
                (self.likely_label(own),), self.label_counts, self.cfg.n_anchor, self.rng
            )
            if label not in self.label_counts:
                raise ValueError(f"unknown target label {label!r}; known: {sorted(self.label_counts)}")
            target = self.anchor(label)
        elif mode == "untargeted":
            target = untargeted_target(own.reshape(1, -1))[0]
        else:
            if private is None:
                raise ValueError("carrier mode needs the private image whose results to retrieve")
            target = carrier_target(self.model, private)[0]
        report = None if on_step is None else (lambda k, dist: on_step(k, int(dist[0])))
        result = self.attack(x, target.reshape(1, -1), on_step=report)
        return Protected(
            image=result.images[0].cpu(),
            code=result.codes[0],
            target_code=target,
            target_label=label,
            iterations=int(result.iterations[0]),
            distance=int(hamming(result.codes[:1], target.reshape(1, -1))[0, 0]),
            psnr=float(psnr(result.images, x)[0]),
            linf=float(linf(result.images, x)[0]),
            trace=result.trace[:, 0].cpu().numpy(),
        )


def connect(
    server_url: str, cfg: PrivacyConfig, cache_dir: Path, device: str = "cpu", *, verify: bool | str = True
) -> tuple[Protector, RemoteService]:
    """A Protector on a server's model (downloaded once, sha256-checked) and anchors (codes only).

    ``verify``: an https:// server's certificate check, True or a CA bundle file (requests').
    """
    server = RemoteService(server_url, verify=verify)
    model, _ = server.model(cache_dir, device)
    return Protector(model, cfg, lambda l: server.anchors(l, cfg.n_anchor, cfg.seed), server.labels()), server


def query(
    image: torch.Tensor,
    server_url: str,
    cfg: PrivacyConfig | None,
    *,
    cache_dir: Path,
    mode: str = "semantic",
    target_label: str | None = None,
    private: torch.Tensor | None = None,
    radius: int | None = None,
    k: int | None = None,
    device: str = "cpu",
    verify: bool | str = True,
) -> tuple[dict, Protected | None]:
    """Query a server with ``image`` (3, H, W) in [0, 1]; the protection runs on ``device``.

    With ``cfg`` the image is protected here and only the protected PNG is sent; with None it
    is sent as it is (to compare). Returns the server's answer and the protection report.
    """
    if cfg is None:
        return RemoteService(server_url, verify=verify).search(to_png(image), radius=radius, k=k), None
    protector, server = connect(server_url, cfg, cache_dir, device, verify=verify)
    protected = protector.protect(image, mode, target_label=target_label, private=private)
    return server.search(protected.png(), radius=radius, k=k), protected
