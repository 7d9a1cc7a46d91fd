"""The list files of public hashing code (FLICKR-25K, NUS-WIDE): one file per split with lines
``relative/path.jpg 0 1 0 ... 1`` (DeepHash-pytorch's ``database.txt`` / ``train.txt`` /
``test.txt``), or ``<split>_img.txt`` (a path per line) + ``<split>_label.txt`` (multi-hot rows,
DHTA and ProS-GAN).

The files' splits are kept as published (``ImageList.published``): query = the test (or query)
list, database = the database (or retrieval) list, train = the train list. ``val`` lists are
read for their labels only. ``index_builder.splits`` uses them as they are unless
``data.redraw_splits`` asks for a redraw.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from index_builder.imagelist import ImageList, build_image_list, clean_path, label_names

log = logging.getLogger(__name__)

SPLIT_NAMES = ("database", "train", "test", "query", "val", "retrieval")  # one-file-per-split names
ROLES = {"test": "query", "query": "query", "database": "database", "retrieval": "database", "train": "train"}


def read_list_file(path: str | Path) -> tuple[list[str], np.ndarray]:
    """One file per split: each line ``relative/path.jpg 0 1 0 ... 1``.

    Returns:
        paths and labels (n, L) uint8. ValueError names the file and line of a bad row.
    """
    path = Path(path)
    paths, rows = [], []
    for line_no, line in _lines(path):
        tokens = line.split()
        paths.append(clean_path(tokens[0], f"{path}:{line_no}"))
        rows.append((line_no, tokens[1:]))
    return paths, _multi_hot(rows, path)


def read_split_pair(img_txt: str | Path, label_txt: str | Path) -> tuple[list[str], np.ndarray]:
    """Two files per split: ``<split>_img.txt`` (a path per line), ``<split>_label.txt`` (multi-hot rows)."""
    img_txt, label_txt = Path(img_txt), Path(label_txt)
    paths = [clean_path(line.strip(), f"{img_txt}:{n}") for n, line in _lines(img_txt)]
    rows = [(n, re.split(r"[\s,]+", line.strip())) for n, line in _lines(label_txt)]
    if len(paths) != len(rows):
        raise ValueError(f"{img_txt} has {len(paths)} rows but {label_txt} has {len(rows)}")
    return paths, _multi_hot(rows, label_txt)


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers."""
    with path.open(encoding="utf-8") as f:
        lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, start=1) if line.strip()]
    if not lines:
        raise ValueError(f"{path} has no rows")
    return lines


def _multi_hot(rows: list[tuple[int, list[str]]], path: Path) -> np.ndarray:
    width = len(rows[0][1])
    if width == 0:
        raise ValueError(f"{path}:{rows[0][0]}: row has no labels")
    for line_no, values in rows:
        if len(values) != width:
            raise ValueError(f"{path}:{line_no}: row has {len(values)} labels; line {rows[0][0]} has {width}")
        bad = [v for v in values if v not in ("0", "1")]
        if bad:
            raise ValueError(f"{path}:{line_no}: labels must be 0 or 1; got {bad[0]!r}")
    return np.array([[v == "1" for v in values] for _, values in rows], dtype=np.uint8).reshape(-1, width)


def _find_lists(folder: Path) -> list[tuple[Path, Path | None]]:
    """The split files in folder: (img, label) pairs, or (list file, None); not both formats."""
    pairs = sorted(folder.glob("*_img.txt"))
    singles = [folder / f"{s}.txt" for s in SPLIT_NAMES if (folder / f"{s}.txt").is_file()]
    if pairs and singles:
        raise ValueError(
            f"{folder} holds both list formats ({pairs[0].name}, {singles[0].name}); keep one of them"
        )
    if singles:
        return [(p, None) for p in singles]
    if not pairs:
        raise ValueError(
            f"no list files in {folder}: expected {', '.join(s + '.txt' for s in SPLIT_NAMES)} "
            "or <split>_img.txt + <split>_label.txt"
        )
    found = []
    for img in pairs:
        label = img.with_name(img.name.removesuffix("_img.txt") + "_label.txt")
        if not label.is_file():
            raise ValueError(f"{img} has no matching {label.name}")
        found.append((img, label))
    return found


def open_lists(folder: Path) -> ImageList:
    """All splits' images in one list, with the published splits (module docstring); an image
    listed in several files must have the same labels in each."""
    merged: dict[str, np.ndarray] = {}
    published: dict[str, list[str]] = {}
    width = None
    for first, second in _find_lists(folder):
        paths, labels = read_list_file(first) if second is None else read_split_pair(first, second)
        if width is not None and labels.shape[1] != width:
            raise ValueError(f"{first} has {labels.shape[1]} labels per row; earlier files have {width}")
        width = labels.shape[1]
        for p, row in zip(paths, labels):
            if p in merged and not np.array_equal(merged[p], row):
                raise ValueError(f"{first}: {p} has labels {row.tolist()} here, {merged[p].tolist()} before")
            merged[p] = row
        role = ROLES.get(_split_name(first))
        if role in published:
            raise ValueError(f"{folder}: two list files give the {role} split ({first.name} is the second)")
        if role is not None:
            published[role] = paths
        log.info("read %d rows from %s", len(paths), first.name)
    names = label_names(folder) or tuple(f"label_{j}" for j in range(width))
    if len(names) != width:
        raise ValueError(f"{folder}: label names file lists {len(names)} names; the rows have {width} labels")
    if not {"query", "database"} <= set(published):
        log.info("%s has no query (test) and database lists: its splits will be drawn", folder)
        published = {}
    labels = np.array(list(merged.values()), dtype=np.uint8)
    return build_image_list(folder, list(merged), labels, names, published)


def _split_name(path: Path) -> str:
    """database.txt -> database; database_img.txt -> database."""
    return path.name.removesuffix("_img.txt").removesuffix(".txt")
