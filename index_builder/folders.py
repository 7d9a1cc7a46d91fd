"""Folders as people keep them: class subfolders (torchvision's ImageFolder layout) or a flat,
unlabelled collection. ``labels.csv`` folders are read by ``datasets.open_folder``.

Scanning walks the folder in sorted order, so ids are reproducible, and skips what is not an
image a build could read: hidden files and folders (``.DS_Store``, ``.thumbnails``), files
without an image suffix, ``hashveil protect`` outputs, links that leave the folder, and image
files whose header Pillow cannot read or whose size a build would refuse. Each skip is counted.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from index_builder.imagelist import ImageList, build_image_list, label_names
from retrieval.core.imaging import MAX_PIXELS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
PROTECTED_MARK = ".protected."  # `hashveil protect` writes NAME.protected.EXT beside the original


@dataclass
class Scan:
    """Relative POSIX paths of the readable images under a folder, and why other files were skipped."""

    root: Path
    paths: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        if not self.skipped:
            return "no file skipped"
        reasons = ", ".join(f"{why}: {n}" for why, n in sorted(self.skipped.items()))
        return f"skipped {sum(self.skipped.values())} files ({reasons})"


def scan_images(folder: Path) -> Scan:
    """Every readable image under ``folder`` (recursively, sorted by path), counting the files skipped."""
    root = Path(folder)
    real_root = root.resolve()
    scan = Scan(root)
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(here)
        for name in sorted(files):
            rel = (base / name).relative_to(root).as_posix()
            reason = _skip_reason(base / name, name, real_root)
            if reason:
                scan.skipped[reason] += 1
                log.debug("skipped %s: %s", rel, reason)
            else:
                scan.paths.append(rel)
    scan.paths.sort()
    return scan


def is_image_file(path: Path, root: Path) -> str | None:
    """None when ``path`` is an image a build would index, else why not (for ``hashveil add``)."""
    return _skip_reason(path, path.name, root.resolve())


def _skip_reason(path: Path, name: str, real_root: Path) -> str | None:
    if name.startswith("."):
        return "hidden file"
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file"
    if PROTECTED_MARK in name:
        return "hashveil protect output"
    if not path.resolve().is_relative_to(real_root):
        return "link out of the folder"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: the size is checked below
            with Image.open(path) as img:
                w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "unreadable"
    return "image too large" if w * h > MAX_PIXELS else None


def open_classes(folder: Path, scan: Scan | None = None) -> ImageList:
    """Class subfolders: ``folder/<label>/.../image``; an image's label is its top-level folder.

    As in torchvision's ImageFolder, deeper folders only organise a class: a folder tree cannot
    say whether ``animals/cats`` means two labels or one class inside another, so it gives one
    label (use labels.csv for several). Images lying directly in ``folder`` have no class and
    are skipped. Label order: labels.txt / classes.txt when present, else sorted folder names.
    """
    scan = scan or scan_images(folder)
    labelled = [p for p in scan.paths if len(PurePosixPath(p).parts) > 1]
    loose = len(scan.paths) - len(labelled)
    if not labelled:
        raise ValueError(f"{folder} has no class subfolders with images (folder/<label>/<image>)")
    classes = [PurePosixPath(p).parts[0] for p in labelled]
    found = sorted(set(classes))
    names = label_names(folder) or tuple(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown[:5]} are not in the label names file")
    column = {name: j for j, name in enumerate(names)}
    labels = np.zeros((len(labelled), len(names)), dtype=np.uint8)
    labels[np.arange(len(labelled)), [column[c] for c in classes]] = 1
    if loose:
        log.warning(
            "skipped %d images directly in %s: class-folder layout, they have no class", loose, folder
        )
    nested = sum(len(PurePosixPath(p).parts) > 2 for p in labelled)
    log.info(
        "folder %s: class subfolders, %d images in %d classes%s; %s",
        folder,
        len(labelled),
        len(found),
        f" ({nested} in nested folders take their top folder's label)" if nested else "",
        scan.summary(),
    )
    return build_image_list(folder, labelled, labels, names)


def open_flat(folder: Path, scan: Scan | None = None) -> ImageList:
    """An unlabelled collection: every image under ``folder``, for indexing and search only."""
    scan = scan or scan_images(folder)
    if not scan.paths:
        raise ValueError(f"{folder} holds no readable images ({scan.summary()})")
    log.info("folder %s: unlabelled, %d images; %s", folder, len(scan.paths), scan.summary())
    return build_image_list(folder, scan.paths, np.zeros((len(scan.paths), 0), dtype=np.uint8), ())


def has_class_folders(scan: Scan) -> bool:
    """True when some image lies in a subfolder: the auto layout then reads folders as classes."""
    return any(len(PurePosixPath(p).parts) > 1 for p in scan.paths)
