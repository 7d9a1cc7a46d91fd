"""A tiny generated labelled image folder, a config that trains on it fast, an untrained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retrieval.core.config import Config, ModelConfig, override, to_toml
from retrieval.core.model import HashNet, ModelCard, save_checkpoint

PALETTE = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]
NAMES = ["red", "green", "blue", "yellow"]


def make_folder_dataset(root: Path, n: int = 240, size: int = 32, seed: int = 0) -> Path:
    """Write n noisy colour-coded images (one of 4 labels, some with two) and labels.csv."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = ["path,labels"]
    for i in range(n):
        c = i % 4
        labels = [NAMES[c]]
        img = np.empty((size, size, 3))
        img[:] = PALETTE[c]
        if i % 10 == 0:  # a few multi-label images: the second colour fills the lower half
            c2 = (c + 1) % 4
            img[size // 2 :] = PALETTE[c2]
            labels.append(NAMES[c2])
        img += rng.normal(0, 25, img.shape)
        path = f"img/{i:04d}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / path)
        lines.append(f"{path},{'|'.join(labels)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(work_dir: Path, data_dir: Path) -> Config:
    """small_cnn, 16 bits, 32 px on :func:`make_folder_dataset`'s images: trains in seconds."""
    return override(
        Config(),
        paths={"work_dir": work_dir},
        model={"backbone": "small_cnn", "hash_bits": 16, "image_size": 32, "freeze_backbone": False},
        data={
            "dataset": "folder",
            "data_dir": str(data_dir),
            "num_query": 40,
            "num_train": 160,
            "num_database": 0,
            "seed": 0,
        },
        train={"epochs": 15, "batch_size": 32, "lr": 0.003, "eta": 0.01},
        index={"batch_size": 64, "workers": 0},
        server={"radius": 2, "port": 0},
        privacy={"steps": 50, "step_size": 2 / 255},
    )


def write_config(path: Path, cfg: Config) -> Path:
    """``cfg`` as a TOML file, for tests that drive the `hashveil` command or a child process."""
    path.write_text(to_toml(cfg))
    return path


def untrained_model(model_cfg: ModelConfig, seed: int = 0) -> HashNet:
    """A randomly initialised HashNet with zero biases, so that its codes are not all alike."""
    torch.manual_seed(seed)
    model = HashNet(model_cfg).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.bias.zero_()
    return model


def save_untrained_model(cfg: Config, seed: int = 0) -> ModelCard:
    """An untrained model's checkpoint in cfg.work_dir/model, labelled with :data:`NAMES`."""
    model = untrained_model(cfg.model, seed)
    card = model.card(dataset=cfg.data.dataset, label_names=tuple(NAMES), metrics={})
    return save_checkpoint(model, cfg.work_dir / "model", card)


def make_class_folders(root: Path, per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """torchvision's ImageFolder layout: root/<label>/<image>, colour-coded like
    :func:`make_folder_dataset`, with spaces and non-ASCII letters in folder and file names."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASS_FOLDERS):
        for i in range(per_class):
            img = np.empty((size, size, 3))
            img[:] = PALETTE[c]
            img += rng.normal(0, 25, img.shape)
            path = root / name / f"photo {i:02d} é.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return root


CLASS_FOLDERS = ["red apples", "green", "blue sky", "jaune citron"]
