"""Sharded building straight into Milvus (``[index] backend = "milvus"``): no shard files.

Every shard process of one model over one database writes the same collection,
``<base>_s<hash of model and database>`` (index_builder.backends.shard_generation), which no
server reads until a merge names it in a manifest. Shard I of N takes the same contiguous id
range as a file shard, asks the collection which of its ids are already there, hashes only the
others and upserts them: a rerun of a finished shard hashes nothing, a rerun of a killed one
hashes what is missing, and a shard run twice at once writes each id once (upsert by primary
key). The merge reads the collection back, refuses it unless it holds every database id exactly
once and nothing else, writes the store from those codes (one transaction) and the manifest.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from index_builder.backends import milvus_record, served_collections, shard_generation
from index_builder.build import BuildResult, finish_service, hash_database
from index_builder.imagelist import ImageList
from retrieval.core.config import Config
from retrieval.core.model import ModelCard, load_checkpoint, read_card
from retrieval.service.manifest import MANIFEST_FILE
from retrieval.service.milvus_client import resolve_uri
from retrieval.service.milvus_index import MilvusIndex

log = logging.getLogger(__name__)


def shard_collection(cfg: Config, card: ModelCard, digest: str) -> tuple[str, str]:
    """(uri, collection) that the shards of this model over this database write."""
    uri = resolve_uri(cfg.index.milvus_uri, cfg.work_dir)
    return uri, shard_generation(cfg.index.milvus_collection, card.sha256, digest)


def build_milvus_shard(
    cfg: Config,
    index: int,
    count: int,
    card: ModelCard,
    images: ImageList,
    ids: np.ndarray,
    digest: str,
    *,
    use_cache: bool = True,
) -> tuple[str, bool, float]:
    """Hash the ids of shard ``index``/``count`` (``ids``, ascending) not yet in the shard collection.

    Returns where it wrote, whether all ids were there already (nothing hashed), hashing seconds.
    """
    uri, name = shard_collection(cfg, card, digest)
    where = f"Milvus collection {name} at {uri}"
    target = MilvusIndex.open_or_create(uri, name, card.hash_bits, token=cfg.index.milvus_secret())
    try:
        have = target.ids(ids[0], ids[-1]) if len(ids) else ids
        missing = np.setdiff1d(ids, have)
        if not missing.size:
            log.info("shard %d/%d is already complete in %s; skipping it", index, count, where)
            return where, True, 0.0
        model, _ = load_checkpoint(
            cfg.work_dir / "model", expected_sha256=card.sha256, device=cfg.model.device
        )
        t0 = time.perf_counter()
        desc = f"hash shard {index}/{count}"
        codes = hash_database(cfg, model, images, missing, use_cache=use_cache, desc=desc)
        seconds = time.perf_counter() - t0
        target.upsert(codes, missing)
        target.flush()
    finally:
        target.close()
    log.info(
        "shard %d/%d: hashed %d of %d images in %.1f s -> %s",
        index,
        count,
        len(missing),
        len(ids),
        seconds,
        where,
    )
    return where, False, seconds


def merge_milvus_shards(cfg: Config, images: ImageList, database: np.ndarray, digest: str) -> BuildResult:
    """Check the shard collection against the database split, then write the store and manifest."""
    t0 = time.perf_counter()
    card = read_card(cfg.work_dir / "model")
    uri, name = shard_collection(cfg, card, digest)
    ids, codes = read_complete(cfg, card, uri, name, database)
    served = served_collections(cfg.work_dir)
    (cfg.work_dir / "index" / MANIFEST_FILE).unlink(missing_ok=True)
    manifest = finish_service(cfg, card, images, codes, ids, milvus_record(uri, name), keep=served)
    total = time.perf_counter() - t0
    log.info("merged the shards in %s: %d images in %.1f s", name, len(ids), total)
    return BuildResult(manifest, len(ids), 0.0, total)


def read_complete(
    cfg: Config, card: ModelCard, uri: str, name: str, database: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every (id, code) of the shard collection; ValueError unless it is exactly the database.

    FileNotFoundError when no shard has written it yet.
    """
    try:
        index = MilvusIndex.open(uri, name, token=cfg.index.milvus_secret())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no shards of this model and database in Milvus collection {name} at {uri}; "
            "run `hashveil build-index --shard I/N` for I = 1..N first"
        ) from None
    try:
        ids, codes = index.items()
        rows = index.ntotal
        if index.hash_bits != card.hash_bits:
            raise ValueError(f"{name} holds {index.hash_bits}-bit codes; the model makes {card.hash_bits}")
    finally:
        index.close()
    if rows != len(ids) or np.unique(ids).size != len(ids):
        raise ValueError(f"Milvus collection {name} holds {rows} rows for {np.unique(ids).size} ids")
    absent = np.setdiff1d(database, ids)
    if absent.size:
        raise ValueError(
            f"{absent.size} of {len(database)} database ids are not in Milvus collection {name} "
            f"yet (e.g. {absent[:5].tolist()}); run the `hashveil build-index --shard I/N` jobs "
            "that cover them (a finished shard is skipped when run again)"
        )
    extra = np.setdiff1d(ids, database)
    if extra.size:
        raise ValueError(
            f"{extra.size} ids in Milvus collection {name} are not in the database, e.g. {extra[:5]}"
        )
    return ids, codes


def milvus_shards_complete(cfg: Config, card: ModelCard, database: np.ndarray, digest: str) -> bool:
    """True when the shard collection of this model and database holds exactly the database."""
    uri, name = shard_collection(cfg, card, digest)
    try:
        read_complete(cfg, card, uri, name, database)
    except FileNotFoundError:
        return False
    except ValueError as e:
        log.warning("not merging the shards in %s: %s", name, e)
        return False
    return True
