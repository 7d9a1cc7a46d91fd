"""HashNet: backbone -> hash head -> K relaxed outputs C(x); codes are sign(C(x)).

Inputs are images in pixel space [0, 1], shape (n, 3, H, W) of any size: resizing to the
backbone's input size (``imaging.resize_square``, the one resizer of every path) and
normalisation happen inside the model, so attacks bound their perturbation in the pixels
the user uploads. Checkpoints are a safetensors state_dict plus a JSON model card.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from retrieval.core.backbones import build_backbone
from retrieval.core.codes import check_bits, pack
from retrieval.core.config import ModelConfig
from retrieval.core.imaging import resize_square

HEAD_HIDDEN = 1024
# encode() runs the backbone on chunks of 2 to ENCODE_CHUNK images (a lone image padded with a black one)
# and the head one image at a time: see HashNet.relaxed
ENCODE_CHUNK = 8
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"


@dataclass(frozen=True)
class ModelCard:
    """What a client needs to rebuild the model and check it: the JSON beside the weights."""

    backbone: str
    hash_bits: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""
    label_names: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the training configuration, for provenance and reuse
    sha256: str = ""  # of the weights file

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelCard":
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown model card fields: {sorted(unknown)}")
        raw = dict(raw)
        for key in ("mean", "std", "label_names"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)


class HashNet(nn.Module):
    """C(x) = head(backbone(normalise(resize(x)))), with x in [0, 1]."""

    def __init__(self, cfg: ModelConfig, *, load_pretrained: bool = True) -> None:
        super().__init__()
        bb = build_backbone(cfg.backbone, cfg.pretrained, load_weights=load_pretrained)
        self.backbone_name = cfg.backbone
        self.hash_bits = check_bits(cfg.hash_bits)
        self.image_size = cfg.image_size
        self.register_buffer("mean", torch.tensor(bb.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(bb.std).view(1, 3, 1, 1))
        self.backbone = bb.module
        self.head = nn.Sequential(
            nn.Linear(bb.feature_dim, HEAD_HIDDEN), nn.ReLU(), nn.Linear(HEAD_HIDDEN, cfg.hash_bits)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of pixel images. Shape: (n, 3, H, W) in [0, 1] -> (n, D)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(x.shape)}")
        x = resize_square(x, self.image_size)
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Relaxed outputs C(x). Shape: (n, 3, H, W) -> (n, K)."""
        return self.head(self.features(x))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Images at the backbone's input size, each resized alone (as :meth:`relaxed` does), so a
        server can resize an upload before it joins a batch. Shape: (n, 3, H, W) -> (n, 3, S, S)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(x.shape)}")
        return resize_square(x, self.image_size)

    @torch.inference_mode()
    def relaxed(self, x: torch.Tensor) -> torch.Tensor:
        """C(x) as :meth:`encode` computes it: an image gets the same floats whatever else is in its batch.

        A code bit of a protected image can sit a hair past zero, and the client computed it alone,
        so a server that hashes uploads in batches must not move it. CPU kernels (oneDNN, BLAS) pick
        their blocking by batch size and so round differently: measured on the default model, a
        batch of 1 differs from batches of 2 to 64 by ~2e-6 and the head's matrix product changes
        with its row count. So the backbone sees chunks of 2 to ENCODE_CHUNK images (a lone image is
        padded with a black one), which round alike at 1 to 4 threads, and the head runs per image.
        The server checks this at start (retrieval.service.batcher) and hashes one image at a time
        where it does not hold. Shape: (n, 3, H, W) -> (n, K) float.
        """
        x = self.resize(x.to(self.device))
        out = []
        for chunk in x.split(ENCODE_CHUNK):
            n = chunk.shape[0]
            if n == 1:
                chunk = torch.cat([chunk, torch.zeros_like(chunk)])
            feats = self.features(chunk)[:n]
            out += [self.head(f[None]) for f in feats]
        return torch.cat(out) if out else torch.zeros((0, self.hash_bits), device=self.device)

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> np.ndarray:
        """Packed codes sign(C(x)) of pixel images on any device. Shape: (n, 3, H, W) -> (n, K/8) uint8."""
        return pack(self.relaxed(x))

    def card(self, **extra) -> ModelCard:
        return ModelCard(
            self.backbone_name,
            self.hash_bits,
            self.image_size,
            tuple(self.mean.flatten().tolist()),
            tuple(self.std.flatten().tolist()),
            **extra,
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(model: HashNet, out_dir: str | Path, card: ModelCard) -> ModelCard:
    """Write weights and card atomically (temporary names, then rename); returns the card with sha256."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_w = out / (WEIGHTS_FILE + ".tmp")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_w)
    card = ModelCard.from_dict({**asdict(card), "sha256": file_sha256(tmp_w)})
    tmp_c = out / (CARD_FILE + ".tmp")
    tmp_c.write_text(card.to_json())
    os.replace(tmp_w, out / WEIGHTS_FILE)
    os.replace(tmp_c, out / CARD_FILE)
    return card


def read_card(model_dir: str | Path) -> ModelCard:
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model card at {path}; run `hashveil train` first")
    return ModelCard.from_dict(json.loads(path.read_text()))


def resolve_device(name: str) -> str:
    """model.device -> a torch device name: "auto" is CUDA when present, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device is {name!r} but torch sees no CUDA device; use cpu or auto")
    return name


def load_checkpoint(
    model_dir: str | Path, *, expected_sha256: str | None = None, device: str = "cpu"
) -> tuple[HashNet, ModelCard]:
    """Rebuild a HashNet from its card and load its weights (onto ``device``) after checking their sha256.

    Raises ValueError naming the file when the weights do not match the card (or
    ``expected_sha256``, e.g. the value a server published).
    """
    card = read_card(model_dir)
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"no weights at {weights}")
    digest = file_sha256(weights)
    for want in (card.sha256, expected_sha256):
        if want and digest != want:
            raise ValueError(f"{weights} has sha256 {digest}, expected {want}: refusing to load it")
    cfg = ModelConfig(
        backbone=card.backbone,
        hash_bits=card.hash_bits,
        image_size=card.image_size,
        freeze_backbone=True,
        pretrained="",
    )
    model = HashNet(cfg, load_pretrained=False)
    model.load_state_dict(load_file(weights))
    return model.to(resolve_device(device)).eval(), card
