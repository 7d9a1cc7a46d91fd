"""Sharded building: hash shard I of N of the database on any machine, then merge the shards.

The database ids, sorted, are cut into N contiguous ranges of nearly equal size; shard I
(1-based, as in ``--shard 2/4``) hashes only its range and writes ids + codes to
work_dir/index/shards/shard-000I-of-000N.npz (temporary name, then rename), so a killed run
leaves no half shard and a rerun skips the shards already done. Shard files may be hashed
on other machines or GPUs and copied back. The merge refuses a set that is not exactly one
split of this database by this model: every shard 1..N once, every database id once, one
model sha256, one N. It then writes index, store and manifest in the one-shot build's order,
so the result is the same as ``build_index``'s. With ``[index] backend = "milvus"`` the shards
write straight into one Milvus collection instead (index_builder.milvus_shards).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index_builder.build import BuildResult, hash_database, write_service
from index_builder.datasets import open_dataset
from index_builder.imagelist import ImageList
from index_builder.milvus_shards import build_milvus_shard, merge_milvus_shards, milvus_shards_complete
from index_builder.splits import make_splits
from retrieval.core.config import Config
from retrieval.core.model import ModelCard, load_checkpoint, read_card

log = logging.getLogger(__name__)
MAX_SHARDS = 10_000
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """One shard file: ids (n,) int64 ascending and their packed codes (n, K/8) uint8."""

    path: Path
    index: int  # 1-based
    count: int  # N
    model_sha256: str
    database_sha256: str
    hash_seconds: float
    ids: np.ndarray
    codes: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardResult:
    path: Path | str  # a shard file, or (Milvus) "Milvus collection NAME at URI"
    images: int
    skipped: bool  # the file was already complete for this model and database
    hash_seconds: float


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 1 <= I <= N <= MAX_SHARDS."""
    m = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if not m or not 1 <= int(m[1]) <= int(m[2]) <= MAX_SHARDS:
        raise ValueError(f"shard must be I/N with 1 <= I <= N <= {MAX_SHARDS} (e.g. 2/4); got {spec!r}")
    return int(m[1]), int(m[2])


def shard_dir(cfg: Config) -> Path:
    return cfg.work_dir / "index" / "shards"


def shard_path(cfg: Config, index: int, count: int) -> Path:
    return shard_dir(cfg) / f"shard-{index:04d}-of-{count:04d}.npz"


def shard_ids(database_ids: np.ndarray, index: int, count: int) -> np.ndarray:
    """The ids of shard ``index`` of ``count``: a contiguous range of the sorted database ids."""
    ids = np.sort(np.asarray(database_ids, dtype=np.int64))
    return ids[(index - 1) * len(ids) // count : index * len(ids) // count]


def build_shard(cfg: Config, index: int, count: int, *, use_cache: bool = True) -> ShardResult:
    """Hash shard ``index`` of ``count`` into its file, unless a complete one is already there."""
    parse_shard(f"{index}/{count}")
    card = read_card(cfg.work_dir / "model")
    images, database, digest = _database(cfg, card)
    if cfg.index.backend == "milvus":
        ids = shard_ids(database, index, count)
        where, skipped, seconds = build_milvus_shard(
            cfg, index, count, card, images, ids, digest, use_cache=use_cache
        )
        return ShardResult(where, len(ids), skipped, seconds)
    path = shard_path(cfg, index, count)
    if path.is_file():
        try:
            old = read_shard(path)
            if (old.index, old.count, old.model_sha256, old.database_sha256) == (
                index,
                count,
                card.sha256,
                digest,
            ):
                log.info("shard %d/%d is already complete in %s; skipping it", index, count, path)
                return ShardResult(path, len(old.ids), True, old.hash_seconds)
            log.warning("shard file %s is from another model, split or database; hashing it again", path)
        except ValueError as e:
            log.warning("%s; hashing it again", e)
    model, card = load_checkpoint(
        cfg.work_dir / "model", expected_sha256=card.sha256, device=cfg.model.device
    )
    ids = shard_ids(database, index, count)
    t0 = time.perf_counter()
    codes = hash_database(cfg, model, images, ids, use_cache=use_cache, desc=f"hash shard {index}/{count}")
    seconds = time.perf_counter() - t0
    meta = {
        "index": index,
        "count": count,
        "model_sha256": card.sha256,
        "database_sha256": digest,
        "hash_seconds": seconds,
    }
    _write_atomic(path, ids, codes, meta)
    log.info("hashed shard %d/%d: %d images in %.1f s -> %s", index, count, len(ids), seconds, path)
    return ShardResult(path, len(ids), False, seconds)


def merge_shards(cfg: Config) -> BuildResult:
    """Check the shard files in work_dir/index/shards and write index + store + manifest from them
    (Milvus: check the shard collection and write store + manifest)."""
    t0 = time.perf_counter()
    card = read_card(cfg.work_dir / "model")
    images, database, digest = _database(cfg, card)
    if cfg.index.backend == "milvus":
        return merge_milvus_shards(cfg, images, database, digest)
    shards = check_shards(read_shards(shard_dir(cfg)), card, database, digest)
    ids = np.concatenate([s.ids for s in shards])
    codes = np.concatenate([s.codes for s in shards])
    by_id = np.argsort(ids, kind="stable")
    ids, codes = ids[by_id], codes[by_id]
    order = np.searchsorted(ids, database)  # back to the split's order, as the one-shot build adds them
    manifest = write_service(cfg, card, images, codes[order], ids[order])
    total = time.perf_counter() - t0
    log.info("merged %d shards into %d images in %.1f s", len(shards), len(ids), total)
    return BuildResult(manifest, len(ids), sum(s.hash_seconds for s in shards), total)


def shards_complete(cfg: Config) -> bool:
    """True when work_dir (Milvus: the shard collection) holds a complete, consistent shard set for
    the current model and database."""
    if cfg.index.backend == "milvus":
        try:
            card = read_card(cfg.work_dir / "model")
            _, database, digest = _database(cfg, card)
        except (FileNotFoundError, ValueError):
            return False
        return milvus_shards_complete(cfg, card, database, digest)
    folder = shard_dir(cfg)
    if not folder.is_dir() or not any(folder.glob("*.npz")):
        return False
    try:
        card = read_card(cfg.work_dir / "model")
        _, database, digest = _database(cfg, card)
        check_shards(read_shards(folder), card, database, digest)
    except (FileNotFoundError, ValueError) as e:
        log.warning("not merging the shard files in %s: %s", folder, e)
        return False
    return True


def check_shards(shards: list[Shard], card: ModelCard, database: np.ndarray, digest: str) -> list[Shard]:
    """Raise ValueError naming the first way ``shards`` is not one split of ``database``; sorted shards."""
    for s in shards:
        if s.model_sha256 != card.sha256:
            raise ValueError(
                f"shard {s.name} in {s.path} was hashed by model sha256 {s.model_sha256}, "
                f"but the model in use has {card.sha256}; hash it again with "
                f"`hashveil build-index --shard {s.name}`"
            )
        if s.codes.shape[1] * 8 != card.hash_bits:
            raise ValueError(
                f"shard {s.name} in {s.path} holds {s.codes.shape[1] * 8}-bit codes; "
                f"the model makes {card.hash_bits}-bit codes"
            )
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise ValueError(
            f"shard files split the database into different numbers of shards {counts}; "
            f"keep one set in {shards[0].path.parent}"
        )
    count = counts[0]
    for s in shards:
        if s.database_sha256 != digest:
            raise ValueError(
                f"shard {s.name} in {s.path} was cut from another database or split; "
                f"hash it again with `hashveil build-index --shard {s.name}`"
            )
    seen: dict[int, Shard] = {}
    for s in sorted(shards, key=lambda s: (s.index, s.path.name)):
        if s.index in seen:
            raise ValueError(
                f"shard {s.name} appears twice: {seen[s.index].path.name} and {s.path.name}; remove one"
            )
        seen[s.index] = s
    missing = [i for i in range(1, count + 1) if i not in seen]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing)
        raise ValueError(
            f"missing shard(s) {names} in {shards[0].path.parent}; run "
            f"`hashveil build-index --shard {missing[0]}/{count}` (and the others), then merge"
        )
    ordered = [seen[i] for i in range(1, count + 1)]
    _check_cover(np.concatenate([s.ids for s in ordered]), database)
    return ordered


def read_shards(folder: Path) -> list[Shard]:
    files = sorted(Path(folder).glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no shard files in {folder}; run `hashveil build-index --shard I/N` first")
    return [read_shard(f) for f in files]


def read_shard(path: Path) -> Shard:
    """Load one shard file; ValueError names a file that is not a readable shard."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ids, codes = z["ids"].astype(np.int64), z["codes"]
        shard = Shard(
            path,
            int(meta["index"]),
            int(meta["count"]),
            str(meta["model_sha256"]),
            str(meta["database_sha256"]),
            float(meta["hash_seconds"]),
            ids,
            codes,
        )
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable shard file ({e})") from None
    if codes.dtype != np.uint8 or codes.ndim != 2 or len(codes) != len(ids):
        raise ValueError(f"{path} holds {codes.dtype} codes of shape {codes.shape} for {len(ids)} ids")
    return shard


def _database(cfg: Config, card: ModelCard) -> tuple[ImageList, np.ndarray, str]:
    """The dataset, its database ids in split order, and a digest of both (which images, which ids)."""
    images = open_dataset(cfg.data, cfg.work_dir, card.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    database = np.asarray(splits.database, dtype=np.int64)
    h = hashlib.sha256(images.paths_sha256().encode())
    h.update(np.sort(database).tobytes())
    return images, database, h.hexdigest()


def _check_cover(ids: np.ndarray, database: np.ndarray) -> None:
    """Every database id exactly once, and nothing else."""
    unique, counts = np.unique(ids, return_counts=True)
    twice = unique[counts > 1]
    if len(twice):
        raise ValueError(f"{len(twice)} image ids are in more than one shard, e.g. {twice[:5].tolist()}")
    absent = np.setdiff1d(database, unique)
    if len(absent):
        raise ValueError(f"{len(absent)} database ids are in no shard, e.g. {absent[:5].tolist()}")
    extra = np.setdiff1d(unique, database)
    if len(extra):
        raise ValueError(f"{len(extra)} shard ids are not in the database, e.g. {extra[:5].tolist()}")


def _write_atomic(path: Path, ids: np.ndarray, codes: np.ndarray, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                ids=ids.astype(np.int64),
                codes=np.ascontiguousarray(codes, dtype=np.uint8),
                meta=np.array(json.dumps(meta)),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
