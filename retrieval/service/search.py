"""Searcher: an image or a code -> the index -> the store -> hits.

The one object the server holds. It owns the model, the index and the store of one verified
set (see retrieval.service.manifest) and turns index ids into rows; it never builds a file path from
anything but a stored id.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.core.codes import as_codes
from retrieval.core.config import Config
from retrieval.core.model import HashNet, ModelCard, load_checkpoint, resolve_device
from retrieval.service.index import BinaryIndex
from retrieval.service.manifest import MANIFEST_FILE, Manifest, read_manifest, verify
from retrieval.service.milvus_index import MilvusIndex
from retrieval.service.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    id: int
    distance: int
    labels: tuple[str, ...]
    path: str  # relative to the searcher's image_root


class Searcher:
    """Answers retrieval queries against one model + index + store set."""

    def __init__(
        self,
        model: HashNet,
        card: ModelCard,
        index: BinaryIndex | MilvusIndex,
        store: Store,
        image_root: Path,
    ) -> None:
        if not model.hash_bits == card.hash_bits == index.hash_bits:
            raise ValueError(
                f"code lengths disagree: model {model.hash_bits}, card {card.hash_bits}, "
                f"index {index.hash_bits} bits"
            )
        self.model = model.eval()
        self.card = card
        self.index = index
        self.store = store
        self.image_root = Path(image_root).resolve()
        self._model_lock = threading.Lock()

    @property
    def hash_bits(self) -> int:
        return self.index.hash_bits

    def search_code(self, code: np.ndarray, radius: int, k: int | None = None) -> list[Hit]:
        """Hits within ``radius`` (inclusive) of one packed code, nearest first, ties by id.

        Shape: code (1, K/8) or (K/8,) uint8.
        """
        code = np.asarray(code)
        if code.ndim == 1:
            code = code.reshape(1, -1)
        code = as_codes(code)
        if code.shape[0] != 1:
            raise ValueError(f"search_code takes one code; got shape {code.shape}")
        return self._hits(*self.index.search(code, radius, k)[0])

    def search_images(
        self, images: torch.Tensor, radius: int, k: int | None = None
    ) -> tuple[np.ndarray, list[list[Hit]]]:
        """Encode pixel images with the model, then search each code.

        Shape: images (n, 3, H, W) float in [0, 1] -> codes (n, K/8) uint8 and n hit lists.
        """
        codes = self.encode(images)
        return codes, [self._hits(ids, dist) for ids, dist in self.index.search(codes, radius, k)]

    def encode(self, images: torch.Tensor) -> np.ndarray:
        """Packed codes of pixel images, in eval mode under a lock (one inference at a time)."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(
                f"images must be a float tensor; got {type(images).__name__} {getattr(images, 'dtype', '')}"
            )
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(f"images must have shape (n, 3, H, W) with n >= 1; got {tuple(images.shape)}")
        lo, hi = float(images.min()), float(images.max())
        if not (0 <= lo and hi <= 1):  # also refuses NaN
            raise ValueError(f"pixels must be in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]")
        device = next(self.model.parameters()).device
        with self._model_lock, torch.inference_mode():
            if self.model.training:
                self.model.eval()
            return self.model.encode(images.to(device))

    def image_path(self, image_id: int) -> Path:
        """The file of a database image, by id only; KeyError for ids not in the store."""
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
            raise TypeError(f"image id must be an int; got {image_id!r}")
        row = self.store.images([int(image_id)]).get(int(image_id))
        if row is None:
            raise KeyError(f"no image with id {image_id}")
        path = (self.image_root / row.path).resolve()
        if not path.is_relative_to(self.image_root):
            raise ValueError(f"stored path of image {image_id} leaves the image root: {row.path!r}")
        return path

    def _hits(self, ids: np.ndarray, dist: np.ndarray) -> list[Hit]:
        rows = self.store.images(ids.tolist())
        missing = [i for i in ids.tolist() if i not in rows]
        if missing:
            raise RuntimeError(f"index ids {missing[:5]} are not in the store; rebuild the index")
        return [
            Hit(int(i), int(d), rows[int(i)].labels, rows[int(i)].path)
            for i, d in zip(ids.tolist(), dist.tolist())
        ]


def open_searcher(cfg: Config) -> Searcher:
    """Load the set named by work_dir/index/manifest.json and refuse it if its parts changed."""
    manifest_path = cfg.work_dir / "index" / MANIFEST_FILE
    m = read_manifest(manifest_path)
    device = resolve_device(cfg.model.device)
    model, card = load_checkpoint(cfg.work_dir / "model", device=device)
    store = Store(m.db_url)
    if m.index_backend == "milvus":
        index, where = _open_milvus(m, cfg, card.sha256, store)
    else:
        where = m.index_path(manifest_path.parent)
        verify(m, model_sha256=card.sha256, index_path=where, store=store)
        index = BinaryIndex.load(where)
        if device.startswith("cuda"):
            index.use_gpu(torch.device(device).index or 0)
    if (index.hash_bits, index.kind, index.ntotal) != (m.hash_bits, m.index_kind, m.count):
        raise ValueError(
            f"index {where} is a {index.hash_bits}-bit {index.kind} index of "
            f"{index.ntotal} codes; manifest {manifest_path} expects {m.hash_bits}-bit "
            f"{m.index_kind} with {m.count}"
        )
    log.info("serving %d %d-bit codes (%s index) from %s", m.count, m.hash_bits, m.index_kind, manifest_path)
    return Searcher(model, card, index, store, Path(m.image_root))


def _open_milvus(m: Manifest, cfg: Config, model_sha256: str, store: Store) -> tuple[MilvusIndex, str]:
    """The manifest's collection, checked against the store by its (id, code) fingerprint."""
    index = MilvusIndex.open(m.milvus_uri, m.milvus_collection, token=cfg.index.milvus_secret())
    try:
        verify(m, model_sha256=model_sha256, store=store, index_fingerprint=index.fingerprint())
    except ValueError:
        index.close()
        raise
    return index, f"Milvus collection {m.milvus_collection!r} at {m.milvus_uri}"
