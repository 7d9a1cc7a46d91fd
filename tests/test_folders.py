"""Folders as people keep them (index_builder.folders, datasets.open_folder): labels.csv, class
subfolders, a flat unlabelled collection; odd names, files that are not images; the auto order."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index_builder.datasets import open_dataset, open_folder
from index_builder.folders import scan_images
from index_builder.splits import make_splits
from retrieval.core.config import DataConfig


def _png(path: Path, shade: int = 0, size: tuple[int, int] = (12, 9)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 120, 200)).save(path)
    return path


def _junk(root: Path) -> dict[str, int]:
    """Files a scan must skip, by the reason it gives."""
    (root / "notes.txt").write_text("not an image")
    (root / "Thumbs.db").write_bytes(b"\0" * 16)
    (root / ".DS_Store").write_bytes(b"\0" * 16)
    (root / ".thumbnails").mkdir()
    _png(root / ".thumbnails" / "t.png")  # inside a hidden folder: never walked
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _png(root / "sent.protected.png")  # an output of `hashveil protect`
    return {"not an image file": 2, "hidden file": 1, "unreadable": 1, "hashveil protect output": 1}


# class subfolders: (relative path, its class)
CLASSED = [
    ("cats/a b.png", "cats"),
    ("cats/été 2.jpg", "cats"),
    ("cats/holiday/deep.png", "cats"),  # nested: still the top folder's class
    ("dogs & friends/x.png", "dogs & friends"),
    ("dogs & friends/日本.png", "dogs & friends"),
    ("zebra/z.webp", "zebra"),
]


@pytest.fixture()
def classes_folder(tmp_path: Path) -> Path:
    root = tmp_path / "my photos"
    for i, (rel, _) in enumerate(CLASSED):
        _png(root / rel, 30 * i)
    _png(root / "loose.png")  # directly in the root: no class
    return root


def test_class_subfolders_give_one_label_per_image(classes_folder: Path, caplog) -> None:
    junk = _junk(classes_folder)
    with caplog.at_level(logging.INFO):
        images = open_folder(classes_folder)
    expected = sorted(CLASSED)
    assert images.paths == tuple(p for p, _ in expected)
    assert images.label_names == ("cats", "dogs & friends", "zebra")
    assert images.label_sets(range(len(images))) == [(c,) for _, c in expected]
    assert images.labels.sum(axis=1).tolist() == [1] * len(expected)
    assert "skipped 1 images directly in" in caplog.text
    assert scan_images(classes_folder).skipped == junk


def test_label_names_file_orders_classes_and_must_name_them_all(classes_folder: Path) -> None:
    (classes_folder / "labels.txt").write_text("zebra\ncats\ndogs & friends\n")
    images = open_folder(classes_folder)
    assert images.label_names == ("zebra", "cats", "dogs & friends")
    np.testing.assert_array_equal(images.labels[images.paths.index("zebra/z.webp")], [1, 0, 0])
    (classes_folder / "labels.txt").write_text("zebra\ncats\n")
    with pytest.raises(ValueError, match=r"class folders \['dogs & friends'\] are not in the label names"):
        open_folder(classes_folder)


def test_flat_folder_is_an_unlabelled_collection(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    names = ["IMG 0001.JPG", "ça va.png", "写真.png", "z.bmp"]
    for i, name in enumerate(names):
        _png(root / name, 40 * i)
    junk = _junk(root)
    images = open_folder(root)
    assert images.paths == tuple(sorted(names)) and not images.labelled
    assert images.labels.shape == (4, 0) and images.label_names == ()
    assert scan_images(root).skipped == junk
    splits = make_splits(images, DataConfig(), tmp_path / "splits.json")
    assert (len(splits.query), len(splits.train)) == (0, 0)
    assert splits.database.tolist() == [0, 1, 2, 3]  # every image is a database item
    with pytest.raises(ValueError, match="unlabelled collection has no query or training split"):
        make_splits(images, DataConfig(num_query=1), tmp_path / "s2.json")


def test_auto_prefers_labels_csv_then_classes_then_flat(classes_folder: Path, tmp_path: Path) -> None:
    (classes_folder / "labels.csv").write_text(
        "path,labels\ncats/a b.png,tabby|indoor\nzebra/z.webp,stripes\n"
    )
    by_csv = open_folder(classes_folder)
    assert by_csv.paths == ("cats/a b.png", "zebra/z.webp")
    assert by_csv.label_sets([0, 1]) == [("indoor", "tabby"), ("stripes",)]
    as_classes = open_folder(classes_folder, "classes")
    assert as_classes.label_names == ("cats", "dogs & friends", "zebra")
    as_flat = open_folder(classes_folder, "flat")  # a collection kept in date folders
    assert not as_flat.labelled and len(as_flat) == len(CLASSED) + 1  # the loose image too
    flat = tmp_path / "flat"
    _png(flat / "a.png")
    with pytest.raises(ValueError, match="has no class subfolders with images"):
        open_folder(flat, "classes")
    with pytest.raises(ValueError, match="has no labels.csv"):
        open_folder(flat, "csv")


def test_open_dataset_reads_the_configured_layout(classes_folder: Path, tmp_path: Path) -> None:
    cfg = DataConfig(dataset="folder", data_dir=str(classes_folder), layout="flat")
    assert not open_dataset(cfg, tmp_path, 32).labelled
    cfg = DataConfig(dataset="folder", data_dir=str(classes_folder))
    assert open_dataset(cfg, tmp_path, 32).label_names == ("cats", "dogs & friends", "zebra")
    with pytest.raises(ValueError, match="data.layout must be one of"):
        DataConfig(layout="tree")


def test_empty_or_image_free_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(
        ValueError, match=r"holds no readable images \(skipped 1 files \(not an image file: 1\)\)"
    ):
        open_folder(tmp_path / "docs")
