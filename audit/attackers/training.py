"""What the attackers with models of their own train on: the server's database images, which the
server holds, at a small size, and a hash model of another architecture trained on them.

Nothing is downloaded: the second model is ``small_cnn`` trained end to end on the database split
with central similarity (CSQ, Yuan et al. CVPR 2020: each label gets a random hash centre, and
every output is pulled toward its item's centre by binary cross-entropy), in minutes on a CPU.
DPSH from scratch, the server's recipe, collapsed ``small_cnn`` to one or a few codes for every
image in our trials on the default demo; an attacker picks what
works. Both the image array and the model are cached under the attackers' cache folder, keyed by
the store's fingerprint (and the training settings), so a rerun on the same database reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from retrieval.core.config import ModelConfig
from retrieval.core.imaging import load_image
from retrieval.core.model import HashNet, load_checkpoint, save_checkpoint
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Database:
    """Every database item as the attacker holds it. Shape: pixels (n, 3, S, S) uint8,
    labels (n, L) float32 multi-hot over ``label_names``."""

    ids: np.ndarray
    pixels: torch.Tensor
    labels: np.ndarray
    label_names: tuple[str, ...]

    def label_sets(self, rows: np.ndarray) -> list[tuple[str, ...]]:
        return [tuple(n for n, on in zip(self.label_names, self.labels[r]) if on) for r in rows]


def database(searcher: Searcher, size: int, cache_dir: Path) -> Database:
    """The database images at ``size`` x ``size`` with their labels, read once and cached."""
    store = searcher.store
    path = Path(cache_dir) / f"database-{store.fingerprint()[:16]}-{size}px.npz"
    names = tuple(store.label_names())
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return Database(data["ids"], torch.from_numpy(data["pixels"]), data["labels"], names)
    ids = sorted({int(i) for n in names for i in store.codes_with_label(n, 10**9, 0)[0]})
    rows = store.images(ids)
    pix = np.zeros((len(ids), 3, size, size), dtype=np.uint8)
    labels = np.zeros((len(ids), len(names)), dtype=np.float32)
    for r, i in enumerate(tqdm(ids, desc=f"database images at {size} px", unit="image")):
        img = load_image(searcher.image_path(i)).resize((size, size))
        pix[r] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        labels[r] = [n in rows[i].labels for n in names]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), ids=np.array(ids, dtype=np.int64), pixels=pix, labels=labels)
    path.with_suffix(".tmp.npz").replace(path)
    return Database(np.array(ids, dtype=np.int64), torch.from_numpy(pix), labels, names)


@dataclass(frozen=True)
class SecondModelSettings:
    """How the attacker trains its own hash model (CSQ, end to end)."""

    backbone: str = "small_cnn"
    image_size: int = 28
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    quantization: float = 0.1  # weight of (|u| - 1)^2, which keeps outputs away from 0
    seed: int = 0


def second_model(db: Database, hash_bits: int, settings: SecondModelSettings, cache_dir: Path) -> HashNet:
    """The attacker's own hash model on ``db`` (cached by the database and the settings)."""
    key = json.dumps(
        {"ids": hashlib.sha256(db.ids.tobytes()).hexdigest(), "bits": hash_bits, **vars(settings)}
    )
    folder = Path(cache_dir) / f"second-model-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (folder / "model.json").is_file():
        return load_checkpoint(folder)[0]
    torch.manual_seed(settings.seed)
    model = HashNet(
        ModelConfig(backbone=settings.backbone, hash_bits=hash_bits, image_size=settings.image_size),
        load_pretrained=False,
    )
    _fit(model, db, settings)
    save_checkpoint(model.eval(), folder, model.card(dataset="attacker's own", label_names=db.label_names))
    return load_checkpoint(folder)[0]


def _fit(model: HashNet, db: Database, s: SecondModelSettings) -> None:
    """CSQ: binary cross-entropy of the outputs toward each item's hash centre (its labels'
    random centres, summed and signed), plus a quantisation term."""
    rng = np.random.default_rng(s.seed)
    centres = torch.from_numpy(rng.choice([-1.0, 1.0], size=(len(db.label_names), model.hash_bits))).float()
    target = (torch.from_numpy(db.labels) @ centres >= 0).float()  # (n, K) bits of each item's centre
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(s.seed)
    model.train()
    for _ in tqdm(range(s.epochs), desc="train the attacker's second model", unit="epoch"):
        for rows in torch.randperm(len(db.ids), generator=gen).split(s.batch_size):
            u = model(db.pixels[rows].float() / 255)
            loss = F.binary_cross_entropy_with_logits(u, target[rows])
            loss = loss + s.quantization * (u.abs() - 1).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
