"""Write the database codes to the configured index backend: a FAISS file or a Milvus collection.

Returns the manifest fields that name what was written, so that build.py stays backend-blind.

Milvus builds never write into a collection that a server may be reading. ``[index]
milvus_collection`` is a base name; each build writes a new *generation* of it: a one-shot
build ``<base>_g<UTC time><random>``, sharded builds ``<base>_s<hash of model and database>``
(the same name in every shard process, so shards on many machines fill one collection). The
manifest names the generation; servers switch to it when they see the new manifest. After the
manifest is written, the generations that neither it nor the previous manifest name are
dropped: a server still answering from the previous one keeps working until it switches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from retrieval.core.config import IndexConfig
from retrieval.core.model import file_sha256
from retrieval.service.index import BinaryIndex
from retrieval.service.manifest import MANIFEST_FILE, read_manifest
from retrieval.service.milvus_client import (
    check_collection_name,
    drop_collection,
    list_collections,
    resolve_uri,
)
from retrieval.service.milvus_index import MilvusIndex

log = logging.getLogger(__name__)

INDEX_FILE = "codes.faiss"
_GENERATION = re.compile(r"g\d{14}[0-9a-f]{6}|s[0-9a-f]{16}")


@dataclass(frozen=True)
class IndexRecord:
    """The manifest's index fields (see retrieval.service.manifest.Manifest)."""

    index_backend: str
    index_kind: str
    index_file: str = ""
    index_sha256: str = ""
    milvus_uri: str = ""
    milvus_collection: str = ""

    def fields(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def write_index(
    cfg: IndexConfig, work_dir: Path, hash_bits: int, codes: np.ndarray, ids: np.ndarray
) -> IndexRecord:
    """Index ``codes`` under ``ids`` for a new build.

    Shape: codes (n, K/8) uint8, ids (n,) int64. FAISS goes to work_dir/index/codes.faiss
    (written aside and renamed); Milvus to a new generation of ``cfg.milvus_collection``.
    """
    if cfg.backend == "milvus":
        uri = resolve_uri(cfg.milvus_uri, work_dir)
        name = new_generation(cfg.milvus_collection)
        index = MilvusIndex.create(uri, name, hash_bits, token=cfg.milvus_secret())
        try:
            index.add(codes, ids)
            index.flush()
        finally:
            index.close()
        return milvus_record(uri, name)
    index = BinaryIndex.create(hash_bits, cfg.kind)
    index.add(codes, ids)
    path = Path(work_dir) / "index" / INDEX_FILE
    index.save(path)
    return IndexRecord("faiss", cfg.kind, index_file=INDEX_FILE, index_sha256=file_sha256(path))


def milvus_record(uri: str, collection: str) -> IndexRecord:
    return IndexRecord("milvus", MilvusIndex.kind, milvus_uri=uri, milvus_collection=collection)


def new_generation(base: str) -> str:
    """A fresh collection name for a one-shot build: ``<base>_g<UTC yyyymmddHHMMSS><6 hex>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    return check_collection_name(f"{base}_g{stamp}{secrets.token_hex(3)}")


def shard_generation(base: str, model_sha256: str, database_sha256: str) -> str:
    """The collection every shard of one model over one database writes: ``<base>_s<16 hex>``."""
    digest = hashlib.sha256(f"{model_sha256}:{database_sha256}".encode()).hexdigest()[:16]
    return check_collection_name(f"{base}_s{digest}")


def is_generation(base: str, name: str) -> bool:
    """True for the collections builds of ``base`` write (and ``base`` itself, the old layout)."""
    prefix = f"{base}_"
    return name == base or (name.startswith(prefix) and bool(_GENERATION.fullmatch(name[len(prefix) :])))


def served_collections(work_dir: Path) -> tuple[str, ...]:
    """The Milvus collection the current manifest names (none without a readable Milvus manifest)."""
    try:
        m = read_manifest(Path(work_dir) / "index" / MANIFEST_FILE)
    except (FileNotFoundError, ValueError):
        return ()
    return (m.milvus_collection,) if m.index_backend == "milvus" else ()


def drop_stale_generations(cfg: IndexConfig, work_dir: Path, keep: Iterable[str]) -> list[str]:
    """Drop the generations of ``cfg.milvus_collection`` not in ``keep``; returns their names.

    A failure is logged, never raised: the build it follows is complete.
    """
    uri, keep = resolve_uri(cfg.milvus_uri, work_dir), set(keep)
    token = cfg.milvus_secret()
    dropped = []
    try:
        for name in list_collections(uri, token=token):
            if is_generation(cfg.milvus_collection, name) and name not in keep:
                drop_collection(uri, name, token=token)
                dropped.append(name)
    except Exception as e:  # pymilvus raises its own MilvusException family
        log.warning("could not drop old Milvus collections at %s: %s", uri, e)
    return dropped
