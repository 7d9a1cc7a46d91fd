"""Labelled image collections and their query / train / database splits.

Every dataset becomes one :class:`ImageList` (files under a root folder plus multi-hot labels), so
training, indexing and the privacy evaluation never care where the images came from:

- ``fashion_mnist``: the Debian package's IDX files, exported once as PNGs (see ``fashion_mnist.py``);
- ``flickr25k`` / ``nuswide``: a folder with the list files found in public hashing code, either one
  file per split (``path 0 1 ... 1`` per line) or ``<split>_img.txt`` + ``<split>_label.txt``;
- ``folder``: a folder with ``labels.csv`` (``path,labels``, labels separated by ``|``).

Images without any label are dropped at load (and the count is logged): relevance is "shares at least
one label", so an unlabelled image could never be relevant and would only distort MAP.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from index_builder import fashion_mnist
from retrieval.config import DataConfig
from retrieval.imaging import load_image, to_tensor

log = logging.getLogger(__name__)

LABEL_NAME_FILES = ("labels.txt", "classes.txt")
SPLIT_NAMES = ("database", "train", "test", "query", "val", "retrieval")  # one-file-per-split names
_SPLITS_VERSION = 1


@dataclass(frozen=True, eq=False)
class ImageList:
    """Images at ``root / paths[i]`` with multi-hot ``labels[i]``; every image has at least one label."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # (n, L) uint8 in {0, 1}
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n, names = len(self.paths), len(self.label_names)
        if self.labels.dtype != np.uint8 or self.labels.shape != (n, names):
            raise ValueError(
                f"labels must be uint8 of shape ({n}, {names}); got {self.labels.dtype} {self.labels.shape}"
            )
        if n and (self.labels.max() > 1 or self.labels.sum(axis=1).min() == 0):
            raise ValueError("labels must be 0/1 with at least one label per image")

    def __len__(self) -> int:
        return len(self.paths)

    def label_sets(self, indices: Sequence[int] | np.ndarray) -> list[tuple[str, ...]]:
        """Label names of each indexed image, in label order (for display and the store)."""
        return [
            tuple(self.label_names[j] for j in np.flatnonzero(self.labels[int(i)]))
            for i in np.asarray(indices, dtype=np.int64).reshape(-1)
        ]

    def paths_sha256(self) -> str:
        """Fingerprint of the image paths, so that saved splits notice a different dataset."""
        return hashlib.sha256("\n".join(self.paths).encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class Splits:
    """Index arrays into an ImageList; train is a subset of database (DPSH convention)."""

    query: np.ndarray  # int64, sorted
    train: np.ndarray  # int64, sorted, subset of database
    database: np.ndarray  # int64, sorted, disjoint from query
    seed: int


def open_dataset(cfg: DataConfig, work_dir: Path, image_size: int) -> ImageList:
    """Open the configured dataset; Fashion-MNIST is first exported to PNGs under work_dir (once)."""
    if cfg.dataset == "fashion_mnist":
        folder = fashion_mnist.export(
            cfg.data_dir, Path(work_dir), image_size, cfg.num_query, cfg.num_database, cfg.seed
        )
        return _open_folder(folder)
    if not cfg.data_dir:
        raise ValueError(f"data.data_dir must name the image folder for dataset {cfg.dataset!r}; got ''")
    folder = Path(cfg.data_dir)
    if not folder.is_dir():
        raise ValueError(f"data.data_dir is not a folder: {folder}")
    if cfg.dataset == "folder":
        return _open_folder(folder)
    if cfg.dataset in ("flickr25k", "nuswide"):
        return _open_lists(folder)
    raise ValueError(f"unknown dataset {cfg.dataset!r}")


# ---------------------------------------------------------------- list formats


def read_list_file(path: str | Path) -> tuple[list[str], np.ndarray]:
    """One file per split: each line ``relative/path.jpg 0 1 0 ... 1``.

    Returns:
        paths and labels (n, L) uint8. ValueError names the file and line of a bad row.
    """
    path = Path(path)
    paths, rows = [], []
    for line_no, line in _lines(path):
        tokens = line.split()
        paths.append(_clean_path(tokens[0], f"{path}:{line_no}"))
        rows.append((line_no, tokens[1:]))
    return paths, _multi_hot(rows, path)


def read_split_pair(img_txt: str | Path, label_txt: str | Path) -> tuple[list[str], np.ndarray]:
    """Two files per split: ``<split>_img.txt`` (a path per line), ``<split>_label.txt`` (multi-hot rows)."""
    img_txt, label_txt = Path(img_txt), Path(label_txt)
    paths = [_clean_path(line.strip(), f"{img_txt}:{n}") for n, line in _lines(img_txt)]
    rows = [(n, re.split(r"[\s,]+", line.strip())) for n, line in _lines(label_txt)]
    if len(paths) != len(rows):
        raise ValueError(f"{img_txt} has {len(paths)} rows but {label_txt} has {len(rows)}")
    return paths, _multi_hot(rows, label_txt)


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers."""
    with path.open(encoding="utf-8") as f:
        lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, start=1) if line.strip()]
    if not lines:
        raise ValueError(f"{path} has no rows")
    return lines


def _multi_hot(rows: list[tuple[int, list[str]]], path: Path) -> np.ndarray:
    width = len(rows[0][1])
    if width == 0:
        raise ValueError(f"{path}:{rows[0][0]}: row has no labels")
    for line_no, values in rows:
        if len(values) != width:
            raise ValueError(f"{path}:{line_no}: row has {len(values)} labels; line {rows[0][0]} has {width}")
        bad = [v for v in values if v not in ("0", "1")]
        if bad:
            raise ValueError(f"{path}:{line_no}: labels must be 0 or 1; got {bad[0]!r}")
    return np.array([[v == "1" for v in values] for _, values in rows], dtype=np.uint8).reshape(-1, width)


def _clean_path(raw: str, where: str) -> str:
    """Relative POSIX path inside the root; absolute paths and '..' would escape the data folder."""
    p = PurePosixPath(raw)
    if not raw or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{where}: image path must be relative and inside the data folder; got {raw!r}")
    return p.as_posix()


def _find_lists(folder: Path) -> list[tuple[Path, Path | None]]:
    """The split files in folder: (img, label) pairs, or (list file, None); not both formats."""
    pairs = sorted(folder.glob("*_img.txt"))
    singles = [folder / f"{s}.txt" for s in SPLIT_NAMES if (folder / f"{s}.txt").is_file()]
    if pairs and singles:
        raise ValueError(
            f"{folder} holds both list formats ({pairs[0].name}, {singles[0].name}); keep one of them"
        )
    if singles:
        return [(p, None) for p in singles]
    if not pairs:
        raise ValueError(
            f"no list files in {folder}: expected {', '.join(s + '.txt' for s in SPLIT_NAMES)} "
            "or <split>_img.txt + <split>_label.txt"
        )
    found = []
    for img in pairs:
        label = img.with_name(img.name.removesuffix("_img.txt") + "_label.txt")
        if not label.is_file():
            raise ValueError(f"{img} has no matching {label.name}")
        found.append((img, label))
    return found


def _open_lists(folder: Path) -> ImageList:
    """Merge all splits into one list (splits are redrawn from the seed); a shared path must agree."""
    merged: dict[str, np.ndarray] = {}
    width = None
    for first, second in _find_lists(folder):
        paths, labels = read_list_file(first) if second is None else read_split_pair(first, second)
        if width is not None and labels.shape[1] != width:
            raise ValueError(f"{first} has {labels.shape[1]} labels per row; earlier files have {width}")
        width = labels.shape[1]
        for p, row in zip(paths, labels):
            if p in merged and not np.array_equal(merged[p], row):
                raise ValueError(f"{first}: {p} has labels {row.tolist()} here, {merged[p].tolist()} before")
            merged[p] = row
        log.info("read %d rows from %s", len(paths), first.name)
    names = _label_names(folder) or tuple(f"label_{j}" for j in range(width))
    if len(names) != width:
        raise ValueError(f"{folder}: label names file lists {len(names)} names; the rows have {width} labels")
    return _build(folder, list(merged), np.array(list(merged.values()), dtype=np.uint8), names)


# ---------------------------------------------------------------- folder + labels.csv


def _open_folder(folder: Path) -> ImageList:
    """``labels.csv`` with header ``path,labels``; label order from labels.txt if present, else sorted."""
    csv_path = folder / "labels.csv"
    if not csv_path.is_file():
        raise ValueError(f"{folder} has no labels.csv (header 'path,labels', labels separated by '|')")
    paths, sets = [], []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["path", "labels"]:
            raise ValueError(f"{csv_path}:1: header must be 'path,labels'; got {header!r}")
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{csv_path}:{reader.line_num}: expected 2 columns; got {len(row)}: {row!r}")
            paths.append(_clean_path(row[0].strip(), f"{csv_path}:{reader.line_num}"))
            sets.append({name.strip() for name in row[1].split("|") if name.strip()})
    names = _label_names(folder) or tuple(sorted(set().union(*sets)))
    column = {name: j for j, name in enumerate(names)}
    unknown = sorted(set().union(*sets) - set(column))
    if unknown:
        raise ValueError(f"{csv_path}: labels {unknown[:5]} are not in the label names file")
    labels = np.zeros((len(paths), len(names)), dtype=np.uint8)
    for i, s in enumerate(sets):
        labels[i, [column[name] for name in s]] = 1
    return _build(folder, paths, labels, names)


def _label_names(folder: Path) -> tuple[str, ...] | None:
    for name in LABEL_NAME_FILES:
        path = folder / name
        if path.is_file():
            names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            if len(set(names)) != len(names):
                raise ValueError(f"{path} lists a label name twice")
            return names
    return None


def _build(root: Path, paths: list[str], labels: np.ndarray, names: tuple[str, ...]) -> ImageList:
    """Drop unlabelled images, check that every image file exists (all of them), and wrap up."""
    dups = [p for p, count in Counter(paths).items() if count > 1]
    if dups:
        raise ValueError(f"{root}: images listed twice, e.g. {dups[:3]}")
    keep = labels.sum(axis=1) > 0
    if not keep.all():
        log.warning("dropped %d of %d images with no label: they can never be relevant",
                    int((~keep).sum()), len(paths))
    paths = [p for p, k in zip(paths, keep) if k]
    if not paths:
        raise ValueError(f"{root}: no image has a label")
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise ValueError(f"{root}: {len(missing)} listed images are missing, e.g. {missing[:3]}")
    return ImageList(Path(root), tuple(paths), np.ascontiguousarray(labels[keep]), tuple(names))


# ---------------------------------------------------------------- splits


def make_splits(images: ImageList, cfg: DataConfig, path: Path) -> Splits:
    """Draw query / database / train from cfg.seed, or reload them from ``path`` when they still match.

    Query = num_query random items; database = the rest (num_database of them when > 0); train =
    num_train random database items. Saved as JSON with the seed, sizes and a hash of the paths.
    """
    path = Path(path)
    meta = {
        "version": _SPLITS_VERSION, "seed": cfg.seed, "n": len(images), "num_query": cfg.num_query,
        "num_train": cfg.num_train, "num_database": cfg.num_database,
        "paths_sha256": images.paths_sha256(),
    }
    if path.is_file():
        splits = _load_splits(path, meta)
        if splits is not None:
            log.info("reusing splits from %s", path)
            return splits
        log.warning("splits in %s do not match this dataset or config; recomputing them", path)
    splits = _draw(len(images), cfg)
    payload = {**meta, **{k: getattr(splits, k).tolist() for k in ("query", "train", "database")}}
    _write_atomic(path, json.dumps(payload))
    return splits


def _draw(n: int, cfg: DataConfig) -> Splits:
    if cfg.num_query >= n:
        raise ValueError(f"num_query must be less than the {n} images; got {cfg.num_query}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    database = order[cfg.num_query:]
    if cfg.num_database > 0:
        database = database[: cfg.num_database]
    if cfg.num_train > len(database):
        raise ValueError(f"num_train must be at most the database size {len(database)}; got {cfg.num_train}")
    train = rng.choice(database, size=cfg.num_train, replace=False)
    return Splits(*(np.sort(a).astype(np.int64) for a in (order[: cfg.num_query], train, database)), cfg.seed)


def _load_splits(path: Path, meta: dict) -> Splits | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if any(saved.get(k) != v for k, v in meta.items()):
            return None
        query, train, database = (np.asarray(saved[k], dtype=np.int64) for k in ("query", "train", "database"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cannot read splits %s: %s", path, e)
        return None
    n = meta["n"]
    valid = (
        len(query) == meta["num_query"] and len(train) == meta["num_train"]
        and all(a.ndim == 1 and (a.size == 0 or (a.min() >= 0 and a.max() < n)) for a in (query, train, database))
        and not np.intersect1d(query, database).size
        and np.isin(train, database).all()
    )
    return Splits(query, train, database, meta["seed"]) if valid else None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")  # umask permissions, unlike mkstemp's 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- torch


class ImageDataset(Dataset):
    """Images of an ImageList as float (3, S, S) tensors in [0, 1], with their ImageList index."""

    def __init__(self, images: ImageList, indices: np.ndarray, image_size: int) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or (indices.size and (indices.min() < 0 or indices.max() >= len(images))):
            raise ValueError(f"indices must be 1-D in [0, {len(images)}); got shape {indices.shape}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive; got {image_size!r}")
        self.images, self.indices, self.image_size = images, indices, image_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[i])
        img = load_image(self.images.root / self.images.paths[index])
        return to_tensor(img, self.image_size), index
