"""Fashion-MNIST as a folder of PNGs: the default dataset, available offline as a Debian package.

The 70,000 IDX images (train then t10k, so id 60000 is the first t10k image) are sampled with the
config's seed, upsampled with bilinear resampling to the model's input size and written once as 8-bit
greyscale PNGs plus ``labels.csv`` / ``labels.txt``. The result is an ordinary "folder" dataset, so the
model and the server read Fashion-MNIST exactly as they read a user's photos (the loader turns the
greyscale into three identical RGB channels).
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
PARTS = ("train", "t10k")
_IMAGE_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
_LABEL_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension


def source_dir(data_dir: str | Path = "") -> Path:
    """The folder holding the IDX files; FileNotFoundError says how to get them."""
    folder = Path(data_dir) if str(data_dir) else DEFAULT_DIR
    for part in PARTS:
        for kind in ("images-idx3", "labels-idx1"):
            _idx_path(folder, f"{part}-{kind}-ubyte")
    return folder


def _idx_path(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {folder / (stem + '.gz')} not found; install it with "
        f"`apt-get install dataset-fashion-mnist` or set data.data_dir to a folder holding the IDX files"
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = magic - 2048
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ValueError(f"{path}: IDX magic number must be {magic}; got {int(header[0])}")
    shape = tuple(int(d) for d in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim))
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def load_idx(data_dir: str | Path = "") -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 images and labels, train then t10k.

    Returns:
        images (70000, 28, 28) uint8 and labels (70000,) uint8 class ids in [0, 10).
    """
    folder = source_dir(data_dir)
    images, labels = [], []
    for part in PARTS:
        x = _read_idx(_idx_path(folder, f"{part}-images-idx3-ubyte"), _IMAGE_MAGIC)
        y = _read_idx(_idx_path(folder, f"{part}-labels-idx1-ubyte"), _LABEL_MAGIC)
        if len(x) != len(y):
            raise ValueError(f"{folder}: {part} has {len(x)} images but {len(y)} labels")
        images.append(x)
        labels.append(y)
    y = np.concatenate(labels)
    if y.max() >= len(CLASS_NAMES):
        raise ValueError(f"{folder}: class id {int(y.max())} is outside [0, {len(CLASS_NAMES)})")
    return np.concatenate(images), y


def count_images(data_dir: str | Path = "") -> int:
    """Number of images in train + t10k, read from the IDX headers only (a reused export needs no more)."""
    folder = source_dir(data_dir)
    total = 0
    for part in PARTS:
        path = _idx_path(folder, f"{part}-images-idx3-ubyte")
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            magic, count = (int(v) for v in np.frombuffer(f.read(8), dtype=">u4"))
        if magic != _IMAGE_MAGIC:
            raise ValueError(f"{path}: IDX magic number must be {_IMAGE_MAGIC}; got {magic}")
        total += count
    return total


def select_ids(total: int, num_query: int, num_database: int, seed: int) -> np.ndarray:
    """Sorted ids of the exported images: num_query + num_database (0: all the rest) drawn with seed."""
    count = total if num_database == 0 else num_query + num_database
    if count > total or num_query >= count:
        raise ValueError(
            f"Fashion-MNIST has {total} images; cannot take num_query={num_query} + "
            f"num_database={num_database} (0 = all the rest)"
        )
    return np.sort(np.random.default_rng(seed).permutation(total)[:count]).astype(np.int64)


def image_path(image_id: int) -> str:
    """Relative path of one exported image."""
    return f"images/{image_id:06d}.png"


def export(
    data_dir: str | Path, work_dir: Path, image_size: int, num_query: int, num_database: int, seed: int
) -> Path:
    """Export the sampled images once; a complete export with the same ids is reused as is.

    Returns the export folder, ``work_dir/data/fashion_mnist_{image_size}px``. Writing goes to a
    temporary sibling folder that is renamed into place, so a crash never leaves a half export.
    """
    if not 1 <= image_size <= 4096:
        raise ValueError(f"image_size must be an int in [1, 4096]; got {image_size!r}")
    target = Path(work_dir) / "data" / f"fashion_mnist_{image_size}px"
    ids = select_ids(count_images(data_dir), num_query, num_database, seed)
    expected = [image_path(int(i)) for i in ids]
    if _is_complete(target, expected):
        log.info("reusing Fashion-MNIST export %s (%d images)", target, len(ids))
        return target
    images, labels = load_idx(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # not mkdtemp: its mode 0700 would hide the export from a server run as another user
    log.info("exporting %d Fashion-MNIST images at %dpx to %s", len(ids), image_size, target)
    try:
        _write(tmp, images, labels, ids, image_size)
        _install(tmp, target, expected)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def upsample(image: np.ndarray, image_size: int) -> Image.Image:
    """28x28 uint8 -> image_size x image_size greyscale ("L") with bilinear resampling."""
    return Image.fromarray(image, mode="L").resize((image_size, image_size), Image.Resampling.BILINEAR)


def _write(folder: Path, images: np.ndarray, labels: np.ndarray, ids: np.ndarray, image_size: int) -> None:
    (folder / "images").mkdir()

    def save(image_id: int) -> None:
        upsample(images[image_id], image_size).save(folder / image_path(image_id), compress_level=1)

    workers = min(4, os.cpu_count() or 1)  # zlib and file writes release the GIL
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(save, (int(i) for i in ids))
        for _ in tqdm(jobs, total=len(ids), desc=f"export Fashion-MNIST {image_size}px", unit="img"):
            pass
    (folder / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels"])
        writer.writerows((image_path(int(i)), CLASS_NAMES[labels[i]]) for i in ids)


def _install(tmp: Path, target: Path, expected: list[str]) -> None:
    """Rename tmp into place, replacing a stale export; a concurrent identical export wins."""
    old = None
    if _is_complete(target, expected):
        log.info("another process finished the same export first: %s", target)
        return
    if target.exists():
        old = target.with_name(f"{tmp.name}.old")
        log.warning("replacing Fashion-MNIST export %s: it holds a different sample", target)
        target.rename(old)
    try:
        tmp.rename(target)
    except OSError:
        if not _is_complete(target, expected):
            raise
        log.info("another process finished the same export first: %s", target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_complete(target: Path, expected: list[str]) -> bool:
    """True when labels.csv lists exactly the expected images and every one of them exists."""
    csv_path = target / "labels.csv"
    if not csv_path.is_file() or not (target / "labels.txt").is_file():
        return False
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["path", "labels"] or [r[0] for r in rows[1:] if r] != expected:
        return False
    present = set(os.listdir(target / "images")) if (target / "images").is_dir() else set()
    return all(p.removeprefix("images/") in present for p in expected)
