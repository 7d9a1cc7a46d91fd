"""One labelled image collection: files under a root folder plus multi-hot labels.

Every dataset (``index_builder.datasets``) becomes one :class:`ImageList`, so training, indexing
and the evaluation never care where the images came from. In a labelled list, images without any
label are dropped when the list is built (the count is logged): relevance is "shares at least one
label", so an unlabelled image could never be relevant and would only distort MAP. A list with no
label names at all is an unlabelled collection (a flat photo folder): it can be indexed and
searched, never trained on or scored.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from retrieval.core.imaging import load_image, resize_square, to_tensor

log = logging.getLogger(__name__)

LABEL_NAME_FILES = ("labels.txt", "classes.txt")


@dataclass(frozen=True, eq=False)
class ImageList:
    """Images at ``root / paths[i]`` with multi-hot ``labels[i]``; every image has at least one label,
    unless the list has no label names at all (an unlabelled collection, labels of shape (n, 0)).

    ``published`` holds the splits a dataset ships with (split name -> sorted indices; "query"
    and "database", maybe "train"), used as they are unless a redraw is asked for
    (``index_builder.splits``); empty when the dataset has none.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # (n, L) uint8 in {0, 1}
    label_names: tuple[str, ...]
    published: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, names = len(self.paths), len(self.label_names)
        if self.labels.dtype != np.uint8 or self.labels.shape != (n, names):
            raise ValueError(
                f"labels must be uint8 of shape ({n}, {names}); got {self.labels.dtype} {self.labels.shape}"
            )
        if n and names and (self.labels.max() > 1 or self.labels.sum(axis=1).min() == 0):
            raise ValueError("labels must be 0/1 with at least one label per image")

    @property
    def labelled(self) -> bool:
        """False for an unlabelled collection: it has no query or training split and no MAP."""
        return bool(self.label_names)

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


def build_image_list(
    root: Path,
    paths: list[str],
    labels: np.ndarray,
    names: tuple[str, ...],
    published: Mapping[str, Sequence[str]] | None = None,
) -> ImageList:
    """Drop unlabelled images (of a labelled list), check that every image file exists, and wrap up.

    ``published`` names the paths of each published split; dropped images leave them too.
    """
    dups = [p for p, count in Counter(paths).items() if count > 1]
    if dups:
        raise ValueError(f"{root}: images listed twice, e.g. {dups[:3]}")
    keep = labels.sum(axis=1) > 0 if names else np.ones(len(paths), dtype=bool)
    if not keep.all():
        log.warning(
            "dropped %d of %d images with no label: they can never be relevant",
            int((~keep).sum()),
            len(paths),
        )
    paths = [p for p, k in zip(paths, keep) if k]
    if not paths:
        raise ValueError(f"{root}: no image has a label" if names else f"{root}: no images")
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise ValueError(f"{root}: {len(missing)} listed images are missing, e.g. {missing[:3]}")
    position = {p: i for i, p in enumerate(paths)}
    splits = {
        name: np.array(sorted(position[p] for p in members if p in position), dtype=np.int64)
        for name, members in (published or {}).items()
    }
    return ImageList(Path(root), tuple(paths), np.ascontiguousarray(labels[keep]), tuple(names), splits)


def clean_path(raw: str, where: str) -> str:
    """Relative POSIX path inside the root; absolute paths and '..' would escape the data folder."""
    p = PurePosixPath(raw)
    if not raw or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{where}: image path must be relative and inside the data folder; got {raw!r}")
    return p.as_posix()


def label_names(folder: Path) -> tuple[str, ...] | None:
    for name in LABEL_NAME_FILES:
        path = folder / name
        if path.is_file():
            names = tuple(
                line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            )
            if len(set(names)) != len(names):
                raise ValueError(f"{path} lists a label name twice")
            return names
    return None


class ImageDataset(Dataset):
    """Images of an ImageList as float (3, S, S) tensors in [0, 1], with their ImageList index.

    Each image is resized on its own by the model's resizer (``imaging.resize_square``), so that
    images of any size batch together and the codes equal what the server computes from an
    upload of the same file (the model's resize is then a no-op).
    """

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
        x = to_tensor(load_image(self.images.root / self.images.paths[index]))
        return resize_square(x[None], self.image_size)[0], index
