"""Shared fixtures: a tiny generated labelled image folder and a config that trains on it fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.config import Config, override

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
            img[size // 2:] = PALETTE[c2]
            labels.append(NAMES[c2])
        img += rng.normal(0, 25, img.shape)
        path = f"img/{i:04d}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / path)
        lines.append(f"{path},{'|'.join(labels)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(work_dir: Path, data_dir: Path) -> Config:
    return override(
        Config(),
        paths={"work_dir": work_dir},
        model={"backbone": "small_cnn", "hash_bits": 16, "image_size": 32, "freeze_backbone": False},
        data={"dataset": "folder", "data_dir": str(data_dir), "num_query": 40, "num_train": 160,
              "num_database": 0, "seed": 0},
        train={"epochs": 15, "batch_size": 32, "lr": 0.003, "eta": 0.01},
        index={"batch_size": 64, "workers": 0},
        server={"radius": 2, "port": 0},
        privacy={"steps": 50, "step_size": 2 / 255},
    )


def write_config(path: Path, work: Path, data: Path, port: int = 0) -> Path:
    """The tiny config as a TOML file, for tests that drive the `hashveil` command."""
    path.write_text(f"""
[paths]
work_dir = "{work}"
[model]
backbone = "small_cnn"
hash_bits = 16
image_size = 32
freeze_backbone = false
[data]
dataset = "folder"
data_dir = "{data}"
num_query = 40
num_train = 160
num_database = 0
[train]
epochs = 15
batch_size = 32
lr = 0.003
eta = 0.01
[index]
workers = 0
[server]
port = {port}
radius = 3
""")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny_data):
    """A tiny dataset with a trained small_cnn model and a built index (built once per session)."""
    from index_builder.build import build_index
    from index_builder.dpsh import train

    cfg = tiny_config(tmp_path_factory.mktemp("work"), tiny_data)
    result = train(cfg)
    build_index(cfg)
    return cfg, result


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for this session (tests/pg.py); fails, never skips, without the binaries."""
    import pg

    try:
        server = pg.start_server()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    pg.stop_server(server)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """An empty store URL on each backend: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'test.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


def save_untrained_model(cfg: Config, seed: int = 0):
    """A random small_cnn checkpoint in cfg.work_dir/model (zero biases, so codes vary); its card."""
    import torch

    from retrieval.model import HashNet, save_checkpoint

    torch.manual_seed(seed)
    model = HashNet(cfg.model).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.bias.zero_()
    card = model.card(dataset=cfg.data.dataset, label_names=tuple(NAMES), metrics={})
    return save_checkpoint(model, cfg.work_dir / "model", card)


@pytest.fixture()
def untrained_cfg(tmp_path, tiny_data) -> Config:
    """tiny_config in tmp_path/work with an untrained model: enough to build and serve an index."""
    cfg = tiny_config(tmp_path / "work", tiny_data)
    save_untrained_model(cfg)
    return cfg
