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


AUTO_QUERY_SHARE, AUTO_QUERY_MAX, AUTO_TRAIN_MAX = 0.1, 1000, 20000


@dataclass(frozen=True, eq=False)
class Splits:
    """Index arrays into an ImageList. Drawn splits: train is a subset of database (DPSH
    convention) and query is disjoint from it; published splits are as published.

    An unlabelled collection has an empty query and train split: nothing to score or train on.
    """

    query: np.ndarray  # int64, sorted
    train: np.ndarray  # int64, sorted, subset of database
    database: np.ndarray  # int64, sorted, disjoint from query
    seed: int


@dataclass(frozen=True)
class SplitSizes:
    query: int
    train: int
    database: int


def auto_query(n: int) -> int:
    """The query split of n labelled images when data.num_query is 0: 10 %, at least 1, at most 1,000."""
    return min(AUTO_QUERY_MAX, max(1, round(AUTO_QUERY_SHARE * n)))


def split_sizes(n: int, cfg: DataConfig, labelled: bool = True) -> SplitSizes:
    """The sizes ``make_splits`` draws for n images: the configured ones, with 0 sized to the data.

    Explicit sizes are taken as they are and must fit; an unlabelled collection has no query or
    training split (both need labels), so every image goes to the database.
    """
    if not labelled:
        if cfg.num_query or cfg.num_train:
            raise ValueError(
                "an unlabelled collection has no query or training split (both need labels); "
                f"leave data.num_query and data.num_train at 0; got {cfg.num_query} and {cfg.num_train}"
            )
        return SplitSizes(0, 0, min(n, cfg.num_database) if cfg.num_database else n)
    if n < 2:
        raise ValueError(f"a labelled dataset needs at least 2 images (a query and a database item); got {n}")
    query = cfg.num_query or auto_query(n)
    if query >= n:
        raise ValueError(
            f"data.num_query must be less than the {n} images; got {cfg.num_query} "
            "(0 sizes it to the data: 10 %, at most 1,000)"
        )
    database = min(n - query, cfg.num_database) if cfg.num_database else n - query
    train = cfg.num_train or min(database, AUTO_TRAIN_MAX)
    if train > database:
        raise ValueError(
            f"data.num_train must be at most the database size {database}; got {cfg.num_train} "
            "(0 trains on the whole database, at most 20,000)"
        )
    return SplitSizes(query, train, database)


def make_splits(images: ImageList, cfg: DataConfig, path: Path) -> Splits:
    """The published splits, else drawn from cfg.seed (or reloaded from ``path`` when they still match).

    Published (``images.published``, unless ``cfg.redraw_splits``): query, database and train
    exactly as listed, whatever the size settings say; with no train list, train is ``num_train``
    random database items (0: the whole database list, at most 20,000). Drawn (every other
    dataset, or a redraw): query = the first ``query`` items of a seeded permutation; database =
    the next ``database`` (all the rest by default); train = that many random database items, the
    sizes from ``split_sizes`` (0 = sized to the data). Saved as JSON with the seed, the sizes
    drawn (0s resolved) and a hash of the paths.
    """
    path = Path(path)
    if images.published and not cfg.redraw_splits:
        splits = _published(images, cfg)
        payload = {"version": _SPLITS_VERSION, "source": "published", "seed": cfg.seed, "n": len(images)}
        payload.update(paths_sha256=images.paths_sha256())
        payload.update({k: getattr(splits, k).tolist() for k in ("query", "train", "database")})
        _write_atomic(path, json.dumps(payload))
        return splits
    sizes = split_sizes(len(images), cfg, images.labelled)
    log.info(
        "splits of %d images: %d query, %d database, %d train%s",
        len(images),
        sizes.query,
        sizes.database,
        sizes.train,
        "" if images.labelled else " (unlabelled: every image is a database item)",
    )
    meta = {
        "version": _SPLITS_VERSION,
        "seed": cfg.seed,
        "n": len(images),
        "num_query": sizes.query,
        "num_train": sizes.train,
        "num_database": sizes.database,
        "paths_sha256": images.paths_sha256(),
    }
    if path.is_file():
        splits = _load_splits(path, meta)
        if splits is not None:
            log.info("reusing splits from %s", path)
            return splits
        log.warning("splits in %s do not match this dataset or config; recomputing them", path)
    splits = _draw(len(images), sizes, cfg.seed)
    payload = {**meta, **{k: getattr(splits, k).tolist() for k in ("query", "train", "database")}}
    _write_atomic(path, json.dumps(payload))
    return splits


def _published(images: ImageList, cfg: DataConfig) -> Splits:
    """The splits as the dataset's lists give them (see make_splits)."""
    query, database = images.published["query"], images.published["database"]
    if "train" in images.published:
        train = images.published["train"]
    else:
        size = cfg.num_train or min(len(database), AUTO_TRAIN_MAX)
        if size > len(database):
            raise ValueError(
                f"data.num_train must be at most the database list's {len(database)}; got {size}"
            )
        rng = np.random.default_rng(cfg.seed)
        train = np.sort(rng.choice(database, size=size, replace=False))
        log.info("no train list: training on %d images drawn from the database list", size)
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


def _draw(n: int, sizes: SplitSizes, seed: int) -> Splits:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    database = order[sizes.query : sizes.query + sizes.database]
    train = rng.choice(database, size=sizes.train, replace=False)
    return Splits(*(np.sort(a).astype(np.int64) for a in (order[: sizes.query], train, database)), seed)


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
