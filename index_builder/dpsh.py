"""DPSH training (Li et al. 2015): pairwise likelihood + quantisation loss, resumable.

loss = mean over pairs (i in batch, j in train set) of log(1 + exp(theta_ij)) - s_ij theta_ij,
theta_ij = u_i . U_j / 2, s_ij = 1 when i and j share a label, plus eta * mean (u - sign u)^2.
U is the bank of the latest outputs of every training image, as in the DPSH code. With a frozen
backbone only the hash head trains, on cached features; otherwise the whole model trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from index_builder.datasets import open_dataset
from index_builder.features import cached_features, encode_images, head_codes, loader
from index_builder.imagelist import ImageList
from index_builder.splits import Splits, make_splits
from retrieval.core.config import Config, DataConfig
from retrieval.core.metrics import mean_average_precision
from retrieval.core.model import HashNet, ModelCard, read_card, resolve_device, save_checkpoint

log = logging.getLogger(__name__)
STATE_FILE = "train_state.pt"


def dpsh_loss(u: torch.Tensor, bank: torch.Tensor, similar: torch.Tensor, eta: float) -> torch.Tensor:
    """DPSH loss of batch outputs ``u`` (b, K) against the bank (m, K); ``similar`` is (b, m) 0/1."""
    theta = 0.5 * u @ bank.T
    # log(1 + exp(theta)) computed stably as log(1 + exp(-|theta|)) + max(theta, 0)
    likelihood = torch.log1p(torch.exp(-theta.abs())) + theta.clamp(min=0) - similar * theta
    return likelihood.mean() + eta * (u - u.sign()).pow(2).mean()


@dataclass(frozen=True)
class TrainResult:
    card: ModelCard
    map: float
    map_untrained: float


SIZE_KEYS = ("num_query", "num_train", "num_database")


def train_key(cfg: Config, splits: Splits | None = None) -> dict:
    """The settings a trained model depends on; a checkpoint is reused only when they match.

    With ``splits``, the sizes drawn replace the configured ones (0 = sized to the data).
    ``data.redraw_splits`` counts only for the datasets that ship split lists, so models of the
    other datasets keep their key.
    """
    data = asdict(cfg.data)
    if cfg.data.dataset not in ("flickr25k", "nuswide"):
        data.pop("redraw_splits")
    if splits is not None:
        data.update(zip(SIZE_KEYS, (len(splits.query), len(splits.train), len(splits.database))))
    return {
        "model": {k: v for k, v in asdict(cfg.model).items() if k != "device"},
        "data": data,
        "train": asdict(cfg.train),
    }


def card_matches(card_config: dict, cfg: Config) -> bool:
    """Whether a model card's recorded settings are cfg's.

    A split size left at 0 in cfg (sized to the data) matches the size the card records; a data
    key the card lacks (a checkpoint older than the key) counts as the key's default.
    """
    if not card_config:
        return False
    want = json.loads(json.dumps(train_key(cfg)))
    got = json.loads(json.dumps(card_config))
    data = {**json.loads(json.dumps(asdict(DataConfig()))), **got.get("data", {})}
    data.update({k: 0 for k in SIZE_KEYS if want["data"][k] == 0})
    if "redraw_splits" not in want["data"]:  # a dataset without split lists (train_key)
        data.pop("redraw_splits", None)
    return {**got, "data": data} == want


def checkpoint_matches(cfg: Config) -> bool:
    try:
        card = read_card(cfg.work_dir / "model")
    except (FileNotFoundError, ValueError):
        return False
    return card_matches(card.config, cfg)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: Config, model_dir: Path | None = None) -> TrainResult:
    """Train the hash model of ``cfg`` and save it with its model card.

    ``model_dir`` defaults to work_dir/model; data exports, splits and the features cache
    stay shared in work_dir, so models at other bit lengths reuse them.
    """
    model_dir = Path(model_dir) if model_dir is not None else cfg.work_dir / "model"
    _seed_all(cfg.data.seed)
    device = resolve_device(cfg.model.device)
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    if not images.labelled:
        raise ValueError(
            f"training needs labels, and {images.root} has none (no labels.csv, no class subfolders); "
            "label it (README: Your own images), or index it with a model trained on labelled images"
        )
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    model = HashNet(cfg.model).to(device)
    labels = torch.from_numpy(images.labels.astype(np.float32))
    if cfg.model.freeze_backbone:
        feats = _split_features(cfg, model, images, splits, device)
        floor = _map_from_features(cfg, model, feats, images, splits)
        _train_head(cfg, model, feats["train"], labels[splits.train], device, model_dir)
        result = _map_from_features(cfg, model, feats, images, splits)
    else:
        floor = _map_from_images(cfg, model, images, splits, device)
        _train_full(cfg, model, images, splits, labels, device, model_dir)
        result = _map_from_images(cfg, model, images, splits, device)
    metric = f"map@{cfg.train.map_topk}" if cfg.train.map_topk else "map@all"
    card = model.card(
        dataset=cfg.data.dataset,
        label_names=images.label_names,
        metrics={metric: round(result, 4), f"{metric}_untrained": round(floor, 4)},
        config=train_key(cfg, splits),
    )
    card = save_checkpoint(model.cpu(), model_dir, card)
    (model_dir / STATE_FILE).unlink(missing_ok=True)
    log.info("%s on the query split: %.4f (untrained %.4f)", metric, result, floor)
    return TrainResult(card, result, floor)


def _split_features(
    cfg: Config, model: HashNet, images: ImageList, splits: Splits, device: str
) -> dict[str, torch.Tensor]:
    kw = dict(batch_size=cfg.index.batch_size, workers=cfg.index.workers, device=device)
    cache = cfg.work_dir / "features"
    db = cached_features(model, images, splits.database, cache, desc="database features", **kw)
    query = cached_features(model, images, splits.query, cache, desc="query features", **kw)
    row = {int(i): r for r, i in enumerate(splits.database)}
    if all(int(i) in row for i in splits.train):  # drawn splits: train is part of the database
        train = db[[row[int(i)] for i in splits.train]]
    else:  # a published train list of its own
        train = cached_features(model, images, splits.train, cache, desc="train features", **kw)
    return {"database": db, "query": query, "train": train}


def _map(cfg: Config, q_codes, db_codes, images: ImageList, splits: Splits) -> float:
    return mean_average_precision(
        q_codes,
        images.labels[splits.query],
        db_codes,
        images.labels[splits.database],
        db_ids=splits.database,
        topk=cfg.train.map_topk,
    ).map


def _map_from_features(cfg, model, feats, images, splits) -> float:
    return _map(cfg, head_codes(model, feats["query"]), head_codes(model, feats["database"]), images, splits)


def _map_from_images(cfg, model, images, splits, device) -> float:
    kw = dict(batch_size=cfg.index.batch_size, workers=cfg.index.workers, device=device)
    return _map(
        cfg,
        encode_images(model, images, splits.query, **kw),
        encode_images(model, images, splits.database, **kw),
        images,
        splits,
    )


def _resume(
    cfg: Config, module: torch.nn.Module, opt: torch.optim.Optimizer, bank: torch.Tensor, model_dir: Path
) -> int:
    """Load a saved training state if it was made with the same settings; returns the next epoch."""
    path = model_dir / STATE_FILE
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != _key_digest(cfg):
        log.warning("ignoring %s: it was saved with other settings", path)
        return 0
    module.load_state_dict(state["module"])
    opt.load_state_dict(state["optimizer"])
    bank.copy_(state["bank"])
    log.info("resuming training at epoch %d from %s", state["epoch"], path)
    return int(state["epoch"])


def _save_state(cfg: Config, module, opt, bank: torch.Tensor, epoch: int, model_dir: Path) -> None:
    path = model_dir / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "key": _key_digest(cfg),
            "module": module.state_dict(),
            "optimizer": opt.state_dict(),
            "bank": bank.cpu(),
            "epoch": epoch,
        },
        tmp,
    )
    os.replace(tmp, path)


def _key_digest(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(train_key(cfg), sort_keys=True, default=str).encode()).hexdigest()


def _train_head(
    cfg: Config, model: HashNet, feats: torch.Tensor, labels: torch.Tensor, device: str, model_dir: Path
) -> None:
    """Train the hash head on cached backbone features."""
    feats = feats.to(device)
    gen = torch.Generator().manual_seed(cfg.data.seed)
    orders: list[torch.Tensor] = []  # one shuffle per epoch from one generator, replayed on resume

    def batches(epoch: int):
        while len(orders) <= epoch:
            orders.append(torch.randperm(len(feats), generator=gen))
        for rows in orders[epoch].split(cfg.train.batch_size):
            rows = rows.to(device)
            yield feats[rows], rows

    _fit(cfg, model.head, model.hash_bits, batches, labels, device, model_dir, "train DPSH head")


def _train_full(
    cfg: Config,
    model: HashNet,
    images: ImageList,
    splits: Splits,
    labels: torch.Tensor,
    device: str,
    model_dir: Path,
) -> None:
    """Train backbone and head end to end on images (small_cnn, or fine-tuning on a GPU)."""
    position = np.full(len(images), -1)
    position[splits.train] = np.arange(len(splits.train))  # ImageList index -> row in the bank

    def batches(epoch: int):
        for x, index in loader(
            images,
            splits.train,
            model.image_size,
            cfg.train.batch_size,
            cfg.index.workers,
            shuffle=True,
            seed=cfg.data.seed + epoch,
        ):
            yield x.to(device), torch.from_numpy(position[index.numpy()]).to(device)

    _fit(cfg, model, model.hash_bits, batches, labels[splits.train], device, model_dir, "train DPSH")


def _fit(
    cfg: Config,
    module: torch.nn.Module,
    bits: int,
    batches,
    labels: torch.Tensor,
    device: str,
    model_dir: Path,
    desc: str,
) -> None:
    """The DPSH loop: ``batches(epoch)`` yields (inputs of ``module``, their rows in the bank).

    The bank holds the latest outputs of all n training items; a state is saved after every
    epoch, and a rerun with the same settings resumes from it.
    """
    n = len(labels)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.train.lr)
    bank = torch.zeros(n, bits)
    start = _resume(cfg, module, opt, bank, model_dir)
    bank, labels = bank.to(device), labels.to(device)
    bar = tqdm(range(start, cfg.train.epochs), desc=desc, unit="epoch", initial=start, total=cfg.train.epochs)
    for epoch in bar:
        module.train()
        total = 0.0
        for inputs, rows in batches(epoch):
            u = module(inputs)
            bank[rows] = u.detach()
            loss = dpsh_loss(u, bank, (labels[rows] @ labels.T > 0).float(), cfg.train.eta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        bar.set_postfix(loss=f"{total / n:.4f}")
        _save_state(cfg, module, opt, bank, epoch + 1, model_dir)
