"""Searcher: an image or a code -> the index -> results with their labels.

The one object the server holds. It owns the model, the index, the store and the items' labels
(retrieval.service.labels) of one verified set (see retrieval.service.manifest); it never builds
a file path from anything but a stored id.
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
from retrieval.service.backend import check_int
from retrieval.service.index import BinaryIndex
from retrieval.service.labels import LabelTable
from retrieval.service.manifest import MANIFEST_FILE, Manifest, read_manifest, verify
from retrieval.service.milvus_index import MilvusIndex
from retrieval.service.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    id: int
    distance: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    """One query's whole result, nearest first, ties by id: what is logged and paged through.

    Shape: ids (m,) int64, distances (m,) int64.
    """

    ids: np.ndarray
    distances: np.ndarray
    within_radius: int  # items within the radius; m is this cut to k when k was given

    def __len__(self) -> int:
        return int(self.ids.size)


class Searcher:
    """Answers retrieval queries against one model + index + store set."""

    def __init__(
        self,
        model: HashNet,
        card: ModelCard,
        index: BinaryIndex | MilvusIndex,
        store: Store,
        image_root: Path,
        labels: LabelTable | None = None,
    ) -> None:
        """``labels`` defaults to the store's, read now (a full pass over its images)."""
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
        self.labels = LabelTable.load(store) if labels is None else labels
        self._model_lock = threading.Lock()

    @property
    def hash_bits(self) -> int:
        return self.index.hash_bits

    def results(self, codes: np.ndarray, radius: int, k: int | None = None) -> list[Result]:
        """Each code's items within ``radius`` (inclusive), cut to the k nearest when k is given.

        Shape: codes (n, K/8) uint8.
        """
        if k is not None:
            check_int("k", k, 1, 2**31 - 1)
        out = []
        for ids, dist in self.index.range_search(codes, radius):
            within = int(ids.size)
            if k is not None:
                ids, dist = ids[:k], dist[:k]
            out.append(Result(ids, dist, within))
        return out

    def hits(self, ids: np.ndarray, distances: np.ndarray) -> list[Hit]:
        return [
            Hit(i, d, tuple(labels))
            for i, d, labels in zip(ids.tolist(), distances.tolist(), self.labels.labels(ids))
        ]

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
        (result,) = self.results(code, radius, k)
        return self.hits(result.ids, result.distances)

    def search_images(
        self, images: torch.Tensor, radius: int, k: int | None = None
    ) -> tuple[np.ndarray, list[list[Hit]]]:
        """Encode pixel images with the model, then search each code.

        Shape: images (n, 3, H, W) float in [0, 1] -> codes (n, K/8) uint8 and n hit lists.
        """
        codes = self.encode(images)
        return codes, [self.hits(r.ids, r.distances) for r in self.results(codes, radius, k)]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Checked pixel images at the model's input size, as :meth:`encode` takes them in batches."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(
                f"images must be a float tensor; got {type(images).__name__} {getattr(images, 'dtype', '')}"
            )
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(f"images must have shape (n, 3, H, W) with n >= 1; got {tuple(images.shape)}")
        lo, hi = float(images.min()), float(images.max())
        if not (0 <= lo and hi <= 1):  # also refuses NaN
            raise ValueError(f"pixels must be in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]")
        return self.model.resize(images)

    def encode(self, images: torch.Tensor) -> np.ndarray:
        """Packed codes of pixel images, one inference at a time; a code does not depend on the
        other images of the batch (HashNet.relaxed)."""
        images = self.prepare(images)
        with self._model_lock, torch.inference_mode():
            if self.model.training:
                self.model.eval()
            return self.model.encode(images)

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
