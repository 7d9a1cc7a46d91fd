"""The datasets hashveil reads, each opened as one :class:`~index_builder.imagelist.ImageList`:

- ``fashion_mnist``: the Debian package's IDX files, exported once as PNGs (see ``fashion_mnist.py``);
- ``flickr25k`` / ``nuswide``: a folder with the list files found in public hashing code, either one
  file per split (``path 0 1 ... 1`` per line) or ``<split>_img.txt`` + ``<split>_label.txt``
  (``listfiles.py``);
- ``folder``: a folder as people keep one (``data.layout``, auto by default, tries them in this
  order): ``labels.csv`` (``path,labels``, labels separated by ``|``), class subfolders
  (``folder/<label>/<image>``, torchvision's ImageFolder layout), or a flat unlabelled collection
  (indexed and searched, never trained on); see ``folders.py``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from index_builder import fashion_mnist
from index_builder.folders import has_class_folders, open_classes, open_flat, scan_images
from index_builder.imagelist import ImageList, build_image_list, clean_path, label_names
from index_builder.listfiles import open_lists
from index_builder.splits import AUTO_QUERY_MAX
from retrieval.core.config import DataConfig

log = logging.getLogger(__name__)
FASHION_AUTO_DATABASE = 20_000  # data.num_database 0 on Fashion-MNIST: the demo's 20,000 of 69,000


def open_dataset(cfg: DataConfig, work_dir: Path, image_size: int) -> ImageList:
    """Open the configured dataset; Fashion-MNIST is first exported to PNGs under work_dir (once).

    Fashion-MNIST exports num_query + num_database of its 70,000 images; sized to the data (0),
    that is 1,000 + 20,000, the demo's splits (a query split of 10 % is 1,000 from 10,000 up).
    """
    if cfg.dataset == "fashion_mnist":
        folder = fashion_mnist.export(
            cfg.data_dir,
            Path(work_dir),
            image_size,
            cfg.num_query or AUTO_QUERY_MAX,
            cfg.num_database or FASHION_AUTO_DATABASE,
            cfg.seed,
        )
        return open_folder(folder, "csv")
    if not cfg.data_dir:
        raise ValueError(f"data.data_dir must name the image folder for dataset {cfg.dataset!r}; got ''")
    folder = Path(cfg.data_dir)
    if not folder.is_dir():
        raise ValueError(f"data.data_dir is not a folder: {folder}")
    if cfg.dataset == "folder":
        return open_folder(folder, cfg.layout)
    if cfg.dataset in ("flickr25k", "nuswide"):
        return open_lists(folder)
    raise ValueError(f"unknown dataset {cfg.dataset!r}")


def open_collection(dataset: str, root: Path, layout: str = "auto") -> ImageList:
    """The images under a built index's root as its dataset reads them (for ``hashveil add``)."""
    if dataset in ("flickr25k", "nuswide"):
        return open_lists(Path(root))
    return open_folder(Path(root), "csv" if dataset == "fashion_mnist" else layout)


def open_folder(folder: Path, layout: str = "auto") -> ImageList:
    """A folder in ``layout``: csv, classes, flat, or auto (the first of them that the folder has)."""
    folder = Path(folder)
    if layout == "csv" or (layout == "auto" and (folder / "labels.csv").is_file()):
        return open_csv(folder)
    scan = scan_images(folder)
    if layout == "classes" or (layout == "auto" and has_class_folders(scan)):
        return open_classes(folder, scan)
    if layout in ("flat", "auto"):
        if layout == "auto":
            log.info("%s has no labels.csv and no class subfolders: an unlabelled collection", folder)
        return open_flat(folder, scan)
    raise ValueError(f"data.layout must be auto, csv, classes or flat; got {layout!r}")


def open_csv(folder: Path) -> ImageList:
    """``labels.csv`` with header ``path,labels``; label order from labels.txt if present, else sorted."""
    csv_path = folder / "labels.csv"
    if not csv_path.is_file():
        raise ValueError(f"{folder} has no labels.csv (header 'path,labels', labels separated by '|')")
    paths, sets = [], []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["path", "labels"]:
            raise ValueError(f"{csv_path}:1: header must be 'path,labels'; got {header!r}")
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{csv_path}:{reader.line_num}: expected 2 columns; got {len(row)}: {row!r}")
            paths.append(clean_path(row[0].strip(), f"{csv_path}:{reader.line_num}"))
            sets.append({name.strip() for name in row[1].split("|") if name.strip()})
    names = label_names(folder) or tuple(sorted(set().union(*sets)))
    column = {name: j for j, name in enumerate(names)}
    unknown = sorted(set().union(*sets) - set(column))
    if unknown:
        raise ValueError(f"{csv_path}: labels {unknown[:5]} are not in the label names file")
    labels = np.zeros((len(paths), len(names)), dtype=np.uint8)
    for i, s in enumerate(sets):
        labels[i, [column[name] for name in s]] = 1
    return build_image_list(folder, paths, labels, names)
