"""Hash the database split into a binary index (FAISS file or Milvus collection, per
``[index] backend``) plus a SQL row per image, bound by a manifest.

Crash safety: the old manifest is removed first, the index is written to a temporary name and
renamed (or to a new Milvus collection, see index_builder.backends), the store is replaced in
one transaction, and the manifest (with the checksums of all three) is written last,
atomically. A build killed at any point leaves either no manifest or one whose checksums do not
match, and the server refuses to start on it. Running servers keep answering from the set they
loaded and switch when the new manifest appears (retrieval.service.reload).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from index_builder.backends import (
    IndexRecord,
    drop_stale_generations,
    is_generation,
    served_collections,
    write_index,
)
from index_builder.datasets import open_dataset
from index_builder.features import cached_features, encode_images, head_codes
from index_builder.imagelist import ImageList
from index_builder.splits import make_splits
from retrieval.core.config import Config
from retrieval.core.model import HashNet, ModelCard, load_checkpoint, read_card, resolve_device
from retrieval.service.manifest import MANIFEST_FILE, Manifest, read_manifest, write_manifest
from retrieval.service.milvus_client import resolve_uri
from retrieval.service.records import ImageRow
from retrieval.service.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    images: int
    hash_seconds: float
    total_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.hash_seconds, 1e-9)


def build_index(cfg: Config, *, use_cache: bool = True) -> BuildResult:
    """Hash cfg's database split with the trained model in work_dir/model and write the service files.

    ``use_cache`` reuses backbone features cached during training (frozen backbones only);
    without it every image goes through the whole model.
    """
    t0 = time.perf_counter()
    index_dir = cfg.work_dir / "index"
    index_dir.mkdir(parents=True, exist_ok=True)
    served = served_collections(cfg.work_dir)  # kept until servers have switched to the new build
    (index_dir / MANIFEST_FILE).unlink(missing_ok=True)

    model, card = load_checkpoint(cfg.work_dir / "model", device=cfg.model.device)
    images = open_dataset(cfg.data, cfg.work_dir, card.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    ids = np.asarray(splits.database, dtype=np.int64)

    t1 = time.perf_counter()
    codes = hash_database(cfg, model, images, ids, use_cache=use_cache)
    hash_seconds = time.perf_counter() - t1
    manifest = write_service(cfg, card, images, codes, ids, keep=served)
    total = time.perf_counter() - t0
    log.info("indexed %d images in %.1f s (hashing %.1f s)", len(ids), total, hash_seconds)
    return BuildResult(manifest, len(ids), hash_seconds, total)


def hash_database(
    cfg: Config,
    model: HashNet,
    images: ImageList,
    ids: np.ndarray,
    *,
    use_cache: bool = True,
    desc: str = "hash database",
) -> np.ndarray:
    """Codes of ``images[ids]`` in order. Shape: ids (n,) -> (n, K/8) uint8.

    Frozen backbones with ``use_cache`` go through the cached backbone features, else the whole model.
    """
    device = resolve_device(cfg.model.device)
    if use_cache and cfg.model.freeze_backbone:
        feats = cached_features(
            model,
            images,
            ids,
            cfg.work_dir / "features",
            batch_size=cfg.index.batch_size,
            workers=cfg.index.workers,
            device=device,
            desc=desc,
        )
        return head_codes(model, feats)
    return encode_images(
        model,
        images,
        ids,
        batch_size=cfg.index.batch_size,
        workers=cfg.index.workers,
        device=device,
        desc=desc,
    )


def write_service(
    cfg: Config,
    card: ModelCard,
    images: ImageList,
    codes: np.ndarray,
    ids: np.ndarray,
    *,
    keep: tuple[str, ...] = (),
) -> Manifest:
    """Index + store + manifest from (codes, ids), the manifest last; shared by the one-shot and merged builds.

    Shape: codes (n, K/8) uint8 in the order of ids (n,) int64. ``keep``: Milvus collections a
    running server may still read (the previous manifest's), not dropped afterwards.
    """
    keep = keep + served_collections(cfg.work_dir)
    (cfg.work_dir / "index" / MANIFEST_FILE).unlink(missing_ok=True)
    written = write_index(cfg.index, cfg.work_dir, card.hash_bits, codes, ids)
    return finish_service(cfg, card, images, codes, ids, written, keep=keep)


def finish_service(
    cfg: Config,
    card: ModelCard,
    images: ImageList,
    codes: np.ndarray,
    ids: np.ndarray,
    written: IndexRecord,
    *,
    keep: tuple[str, ...] = (),
) -> Manifest:
    """Store + manifest for an index already written (``written``), then drop stale Milvus generations.

    Shape: codes (n, K/8) uint8 in the order of ids (n,) int64.
    """
    index_dir = cfg.work_dir / "index"
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / MANIFEST_FILE).unlink(missing_ok=True)
    store = Store(cfg.db_url)
    store.create()
    label_sets = images.label_sets(ids)
    store.replace_images(
        (
            ImageRow(
                id=int(i),
                path=images.paths[int(i)],
                labels=tuple(lab),
                split="database",
                code=codes[r].tobytes(),
            )
            for r, (i, lab) in enumerate(zip(ids, label_sets))
        ),
        images.label_names,
    )
    manifest = Manifest(
        model_sha256=card.sha256,
        hash_bits=card.hash_bits,
        **written.fields(),
        count=len(ids),
        store_fingerprint=store.fingerprint(),
        db_url=cfg.db_url,
        image_root=str(images.root.resolve()),
        dataset=cfg.data.dataset,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    store.close()
    write_manifest(index_dir / MANIFEST_FILE, manifest)
    if written.index_backend == "milvus":
        drop_stale_generations(cfg.index, cfg.work_dir, {written.milvus_collection, *keep})
    return manifest


def index_is_current(cfg: Config) -> bool:
    """True when work_dir holds a manifest that matches the current model weights and config."""
    try:
        manifest = read_manifest(cfg.work_dir / "index" / MANIFEST_FILE)
        card = read_card(cfg.work_dir / "model")
    except (FileNotFoundError, ValueError):
        return False
    same_milvus = cfg.index.backend != "milvus" or (
        manifest.milvus_uri == resolve_uri(cfg.index.milvus_uri, cfg.work_dir)
        and is_generation(cfg.index.milvus_collection, manifest.milvus_collection)
    )
    return (
        manifest.model_sha256 == card.sha256
        and manifest.index_kind == cfg.index.kind
        and manifest.index_backend == cfg.index.backend
        and manifest.db_url == cfg.db_url
        and same_milvus
    )
