"""Query / train / database splits of an ImageList: the dataset's published lists when it has
them (FLICKR-25K and NUS-WIDE list files), else drawn from a seed; saved beside the work."""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index_builder.imagelist import ImageList
from retrieval.core.config import DataConfig

log = logging.getLogger(__name__)

_SPLITS_VERSION = 1


@dataclass(frozen=True, eq=False)
class Splits:
    """Index arrays into an ImageList. Drawn splits: train is a subset of database (DPSH
    convention) and query is disjoint from it; published splits are as published."""

    query: np.ndarray  # int64, sorted
    train: np.ndarray  # int64, sorted, subset of database
    database: np.ndarray  # int64, sorted, disjoint from query
    seed: int


def make_splits(images: ImageList, cfg: DataConfig, path: Path) -> Splits:
    """The published splits, else drawn from cfg.seed (or reloaded from ``path`` when they still match).

    Published (``images.published``, unless ``cfg.redraw_splits``): query, database and train
    exactly as listed; with no train list, train is num_train random database items. Drawn:
    query = num_query random items; database = the rest (num_database of them when > 0); train =
    num_train random database items. Saved as JSON with the seed, sizes and a hash of the paths.
    """
    path = Path(path)
    if images.published and not cfg.redraw_splits:
        splits = _published(images, cfg)
        payload = {"version": _SPLITS_VERSION, "source": "published", "seed": cfg.seed, "n": len(images)}
        payload.update(paths_sha256=images.paths_sha256())
        payload.update({k: getattr(splits, k).tolist() for k in ("query", "train", "database")})
        _write_atomic(path, json.dumps(payload))
        return splits
    meta = {
        "version": _SPLITS_VERSION,
        "seed": cfg.seed,
        "n": len(images),
        "num_query": cfg.num_query,
        "num_train": cfg.num_train,
        "num_database": cfg.num_database,
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


def _published(images: ImageList, cfg: DataConfig) -> Splits:
    """The splits as the dataset's lists give them (see make_splits)."""
    query, database = images.published["query"], images.published["database"]
    if "train" in images.published:
        train = images.published["train"]
    else:
        if cfg.num_train > len(database):
            raise ValueError(
                f"num_train must be at most the database list's {len(database)}; got {cfg.num_train}"
            )
        rng = np.random.default_rng(cfg.seed)
        train = np.sort(rng.choice(database, size=cfg.num_train, replace=False))
        log.info("no train list: training on %d images drawn from the database list", cfg.num_train)
    overlap = np.intersect1d(query, database).size
    if overlap:
        log.warning(
            "%d images are in both the query and the database list; keeping them as published", overlap
        )
    log.info(
        "published splits: %d query, %d train, %d database (data.redraw_splits = true redraws them)",
        len(query),
        len(train),
        len(database),
    )
    return Splits(query, np.asarray(train, dtype=np.int64), database, cfg.seed)


def _draw(n: int, cfg: DataConfig) -> Splits:
    if cfg.num_query >= n:
        raise ValueError(f"num_query must be less than the {n} images; got {cfg.num_query}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    database = order[cfg.num_query :]
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
        query, train, database = (
            np.asarray(saved[k], dtype=np.int64) for k in ("query", "train", "database")
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cannot read splits %s: %s", path, e)
        return None
    n = meta["n"]
    valid = (
        len(query) == meta["num_query"]
        and len(train) == meta["num_train"]
        and all(
            a.ndim == 1 and (a.size == 0 or (a.min() >= 0 and a.max() < n)) for a in (query, train, database)
        )
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
