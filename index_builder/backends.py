"""Write the database codes to the configured index backend: a FAISS file or a Milvus collection.

Returns the manifest fields that name what was written, so that build.py stays backend-blind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.core.config import IndexConfig
from retrieval.core.model import file_sha256
from retrieval.service.index import BinaryIndex
from retrieval.service.milvus_index import MilvusIndex, resolve_uri

INDEX_FILE = "codes.faiss"


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
    """Index ``codes`` under ``ids``, replacing what the backend held from an earlier build.

    Shape: codes (n, K/8) uint8, ids (n,) int64. FAISS goes to work_dir/index/codes.faiss;
    Milvus to collection ``cfg.milvus_collection`` at ``cfg.milvus_uri`` (dropped and recreated).
    """
    if cfg.backend == "milvus":
        uri = resolve_uri(cfg.milvus_uri, work_dir)
        index = MilvusIndex.create(
            uri, cfg.milvus_collection, hash_bits, token=cfg.milvus_secret(), replace=True
        )
        try:
            index.add(codes, ids)
        finally:
            index.close()
        return IndexRecord("milvus", index.kind, milvus_uri=uri, milvus_collection=cfg.milvus_collection)
    index = BinaryIndex.create(hash_bits, cfg.kind)
    index.add(codes, ids)
    path = Path(work_dir) / "index" / INDEX_FILE
    index.save(path)
    return IndexRecord("faiss", cfg.kind, index_file=INDEX_FILE, index_sha256=file_sha256(path))
