"""Datasets: both list formats, folder + CSV, splits and the Fashion-MNIST export, on tiny generated data."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from index_builder import fashion_mnist
from index_builder.datasets import open_dataset
from index_builder.imagelist import ImageDataset, ImageList
from index_builder.listfiles import read_list_file, read_split_pair
from index_builder.splits import make_splits
from retrieval.core.config import DataConfig

# 6 images, 3 labels; d.png has no label and must be dropped
ROWS = [
    ("a.png", [1, 0, 0]),
    ("sub/b.png", [0, 1, 1]),
    ("c.png", [1, 1, 0]),
    ("d.png", [0, 0, 0]),
    ("sub/e.png", [0, 0, 1]),
    ("f.png", [1, 0, 1]),
]
KEPT = ("a.png", "sub/b.png", "c.png", "sub/e.png", "f.png")
KEPT_LABELS = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=np.uint8)
SPLIT_OF = {"database": [0, 1, 2, 3], "test": [4, 5]}


def _images(folder: Path, rows=ROWS) -> None:
    for i, (rel, _) in enumerate(rows):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 8), (20 * i, 100, 200)).save(folder / rel)


def _one_file_format(folder: Path) -> Path:
    _images(folder)
    for split, idx in SPLIT_OF.items():
        lines = [f"{ROWS[i][0]} {' '.join(map(str, ROWS[i][1]))}" for i in idx]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def _pair_format(folder: Path) -> Path:
    _images(folder)
    for split, idx in SPLIT_OF.items():
        (folder / f"{split}_img.txt").write_text("".join(f"{ROWS[i][0]}\n" for i in idx))
        (folder / f"{split}_label.txt").write_text(
            "".join(" ".join(map(str, ROWS[i][1])) + "\n" for i in idx)
        )
    return folder


def _open(folder: Path, dataset: str = "flickr25k") -> ImageList:
    return open_dataset(DataConfig(dataset=dataset, data_dir=str(folder)), folder / "work", 32)


def test_both_list_formats_give_the_same_list(tmp_path: Path, caplog) -> None:
    a = _one_file_format(tmp_path / "a")
    b = _pair_format(tmp_path / "b")
    with caplog.at_level(logging.WARNING):
        la, lb = _open(a), _open(b, "nuswide")
    for images, root in ((la, a), (lb, b)):
        assert images.root == root
        assert images.paths == KEPT
        np.testing.assert_array_equal(images.labels, KEPT_LABELS)
        assert images.labels.dtype == np.uint8
        assert images.label_names == ("label_0", "label_1", "label_2")
    assert la.label_sets([1, 4]) == [("label_1", "label_2"), ("label_0", "label_2")]
    assert "dropped 1 of 6 images with no label" in caplog.text


def test_readers_return_rows_as_written(tmp_path: Path) -> None:
    folder = _pair_format(tmp_path)
    paths, labels = read_split_pair(folder / "test_img.txt", folder / "test_label.txt")
    assert paths == ["sub/e.png", "f.png"]
    np.testing.assert_array_equal(labels, [[0, 0, 1], [1, 0, 1]])
    (tmp_path / "x.txt").write_text("./a.png 0 1\n\nb/c.jpg 1 1\n")
    paths, labels = read_list_file(tmp_path / "x.txt")
    assert paths == ["a.png", "b/c.jpg"]
    np.testing.assert_array_equal(labels, [[0, 1], [1, 1]])


def test_label_names_file(tmp_path: Path) -> None:
    folder = _one_file_format(tmp_path)
    (folder / "labels.txt").write_text("sky\nwater\ntree\n")
    images = _open(folder)
    assert images.label_names == ("sky", "water", "tree")
    assert images.label_sets([0, 1, 2]) == [("sky",), ("water", "tree"), ("sky", "water")]
    (folder / "labels.txt").write_text("sky\nwater\n")
    with pytest.raises(ValueError, match="lists 2 names; the rows have 3 labels"):
        _open(folder)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("c.png 1 1", r"database.txt:3: row has 2 labels; line 1 has 3"),
        ("c.png 1 2 0", r"database.txt:3: labels must be 0 or 1; got '2'"),
        ("c.png 1 0.5 0", r"database.txt:3: labels must be 0 or 1; got '0.5'"),
        ("/abs/c.png 1 0 0", r"database.txt:3: image path must be relative"),
        ("../c.png 1 0 0", r"database.txt:3: image path must be relative"),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    folder = _one_file_format(tmp_path)
    lines = (folder / "database.txt").read_text().splitlines()
    lines[2] = line
    (folder / "database.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        _open(folder)


def test_pair_format_errors(tmp_path: Path) -> None:
    folder = _pair_format(tmp_path)
    (folder / "test_label.txt").write_text("0 0 1\n")
    with pytest.raises(ValueError, match=r"test_img.txt has 2 rows but .*test_label.txt has 1"):
        _open(folder)
    (folder / "test_label.txt").write_text("0 0 1\n1 0 3\n")
    with pytest.raises(ValueError, match=r"test_label.txt:2: labels must be 0 or 1; got '3'"):
        _open(folder)
    (folder / "test_label.txt").unlink()
    with pytest.raises(ValueError, match="test_img.txt has no matching test_label.txt"):
        _open(folder)


def test_missing_image_and_mixed_formats(tmp_path: Path) -> None:
    folder = _one_file_format(tmp_path)
    (folder / "sub" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"1 listed images are missing, e.g. \['sub/b.png'\]"):
        _open(folder)
    _pair_format(folder)
    with pytest.raises(ValueError, match="both list formats"):
        _open(folder)


def test_conflicting_labels_across_splits(tmp_path: Path) -> None:
    folder = _one_file_format(tmp_path)
    (folder / "train.txt").write_text("a.png 0 1 0\n")
    with pytest.raises(ValueError, match=r"a.png has labels \[0, 1, 0\] here, \[1, 0, 0\] before"):
        _open(folder)


def test_folder_with_labels_csv(tmp_path: Path, caplog) -> None:
    rows = [("x/1.png", "dog|cat"), ("2.png", "cat"), ("3.png", ""), ("4.png", " bird |dog")]
    _images(tmp_path, rows)
    text = "path,labels\n" + "".join(f"{p},{lab}\n" for p, lab in rows)
    (tmp_path / "labels.csv").write_text(text)
    with caplog.at_level(logging.WARNING):
        images = _open(tmp_path, "folder")
    assert images.paths == ("x/1.png", "2.png", "4.png")
    assert images.label_names == ("bird", "cat", "dog")
    np.testing.assert_array_equal(images.labels, [[0, 1, 1], [0, 1, 0], [1, 0, 1]])
    assert "dropped 1 of 4 images" in caplog.text
    (tmp_path / "labels.txt").write_text("dog\ncat\nbird\n")
    assert _open(tmp_path, "folder").label_sets([2]) == [("dog", "bird")]
    (tmp_path / "labels.csv").write_text("file,labels\n2.png,cat\n")
    with pytest.raises(ValueError, match="header must be 'path,labels'"):
        _open(tmp_path, "folder")
    (tmp_path / "labels.csv").write_text("path,labels\n2.png,cat,extra\n")
    with pytest.raises(ValueError, match="labels.csv:2: expected 2 columns; got 3"):
        _open(tmp_path, "folder")


def _toy_list(n: int) -> ImageList:
    labels = np.zeros((n, 4), dtype=np.uint8)
    labels[np.arange(n), np.arange(n) % 4] = 1
    return ImageList(Path("/nowhere"), tuple(f"{i}.png" for i in range(n)), labels, ("a", "b", "c", "d"))


def test_make_splits_deterministic_disjoint_and_reloaded(tmp_path: Path) -> None:
    images = _toy_list(100)
    cfg = DataConfig(num_query=10, num_train=30, num_database=60, seed=3)
    s1 = make_splits(images, cfg, tmp_path / "s1.json")
    s2 = make_splits(images, cfg, tmp_path / "s2.json")
    other = make_splits(
        images, DataConfig(num_query=10, num_train=30, num_database=60, seed=4), tmp_path / "o.json"
    )
    for name in ("query", "train", "database"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
        assert getattr(s1, name).dtype == np.int64
    assert not np.array_equal(s1.query, other.query)
    assert (len(s1.query), len(s1.train), len(s1.database)) == (10, 30, 60)
    assert not np.intersect1d(s1.query, s1.database).size
    assert np.isin(s1.train, s1.database).all()
    assert len(np.unique(s1.train)) == 30 and s1.seed == 3

    path = tmp_path / "s1.json"
    saved = json.loads(path.read_text())
    assert saved["seed"] == 3 and saved["n"] == 100 and saved["query"] == s1.query.tolist()
    # a reload must return the file's content, not a fresh draw: swap a query item with a database item
    q, d = saved["query"][0], next(i for i in saved["database"] if i not in saved["train"])
    saved["query"] = sorted([d] + saved["query"][1:])
    saved["database"] = sorted([q] + [i for i in saved["database"] if i != d])
    path.write_text(json.dumps(saved))
    before = path.stat().st_mtime_ns
    reloaded = make_splits(images, cfg, path)
    assert d in reloaded.query and q in reloaded.database and path.stat().st_mtime_ns == before

    renamed = ImageList(images.root, tuple(f"z{p}" for p in images.paths), images.labels, images.label_names)
    redrawn = make_splits(renamed, cfg, path)  # same seed and sizes, other dataset: recomputed
    np.testing.assert_array_equal(redrawn.query, s1.query)
    assert json.loads(path.read_text())["paths_sha256"] == renamed.paths_sha256() != images.paths_sha256()


def test_make_splits_all_rest_and_errors(tmp_path: Path) -> None:
    images = _toy_list(20)
    s = make_splits(images, DataConfig(num_query=5, num_train=15, num_database=0), tmp_path / "a.json")
    np.testing.assert_array_equal(np.sort(np.concatenate([s.query, s.database])), np.arange(20))
    with pytest.raises(ValueError, match="num_train must be at most the database size 15; got 16"):
        make_splits(images, DataConfig(num_query=5, num_train=16, num_database=0), tmp_path / "b.json")
    with pytest.raises(ValueError, match="num_query must be less than the 20 images; got 20"):
        make_splits(images, DataConfig(num_query=20, num_train=1), tmp_path / "c.json")


def test_image_dataset_tensors(tmp_path: Path) -> None:
    folder = _one_file_format(tmp_path)
    images = _open(folder)
    ds = ImageDataset(images, np.array([4, 0]), 16)
    assert len(ds) == 2
    x, index = ds[0]
    assert index == 4 and x.shape == (3, 16, 16) and x.dtype == torch.float32
    # f.png is the uniform colour (100, 100, 200): resizing keeps it exact
    torch.testing.assert_close(x, torch.tensor([100, 100, 200.0]).div(255).view(3, 1, 1).expand(3, 16, 16))
    with pytest.raises(ValueError, match=r"indices must be 1-D in \[0, 5\)"):
        ImageDataset(images, np.array([5]), 16)


# ---------------------------------------------------------------- Fashion-MNIST

FASHION = fashion_mnist.DEFAULT_DIR
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


def _idx(name: str, header: int) -> np.ndarray:
    with gzip.open(FASHION / name) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@needs_fashion
def test_fashion_mnist_export_matches_idx_and_is_reused(tmp_path: Path) -> None:
    cfg = DataConfig(num_query=20, num_database=50, num_train=30, seed=0)
    images = open_dataset(cfg, tmp_path, 32)
    folder = tmp_path / "data" / "fashion_mnist_32px"
    assert images.root == folder and len(images) == 70
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(Path(p).name for p in images.paths)
    assert [p.name for p in tmp_path.joinpath("data").iterdir()] == ["fashion_mnist_32px"]  # no temp left
    assert folder.stat().st_mode & 0o055 == (tmp_path / "data").stat().st_mode & 0o055  # umask, not 0700

    pixels = np.concatenate(
        [_idx("train-images-idx3-ubyte.gz", 16), _idx("t10k-images-idx3-ubyte.gz", 16)]
    ).reshape(-1, 28, 28)
    classes = np.concatenate([_idx("train-labels-idx1-ubyte.gz", 8), _idx("t10k-labels-idx1-ubyte.gz", 8)])
    ids = np.array([int(Path(p).stem) for p in images.paths])
    np.testing.assert_array_equal(ids, np.sort(np.random.default_rng(0).permutation(70000)[:70]))
    np.testing.assert_array_equal(images.labels.argmax(axis=1), classes[ids])
    assert images.labels.sum() == 70 and images.label_names[0] == "T-shirt/top"

    reference = (
        F.interpolate(
            torch.from_numpy(pixels[ids]).float()[:, None],
            size=(32, 32),
            mode="bilinear",
            align_corners=False,
        )[:, 0]
        .round()
        .numpy()
    )
    for k, rel in enumerate(images.paths):
        with Image.open(folder / rel) as png:
            assert png.mode == "L" and png.size == (32, 32)
            got = np.asarray(png)
        expected = Image.fromarray(pixels[ids[k]]).resize((32, 32), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(got, np.asarray(expected))
        assert np.abs(got.astype(int) - reference[k]).max() <= 1  # independent bilinear upsample

    x, _ = ImageDataset(images, np.array([0]), 32)[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])

    stamps = {p: p.stat().st_mtime_ns for p in [folder, folder / "labels.csv", folder / images.paths[0]]}
    again = open_dataset(cfg, tmp_path, 32)
    assert again.paths == images.paths
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    other = open_dataset(DataConfig(num_query=20, num_database=50, seed=1), tmp_path, 32)
    assert other.paths != images.paths and len(list((folder / "images").iterdir())) == 70


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path: Path) -> None:
    cfg = DataConfig(data_dir=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        open_dataset(cfg, tmp_path, 32)


def test_fashion_mnist_sample_sizes_are_checked() -> None:
    assert len(fashion_mnist.select_ids(100, 10, 0, 0)) == 100
    with pytest.raises(
        ValueError, match="has 70000 images; cannot take num_query=1000 \\+ num_database=69001"
    ):
        fashion_mnist.select_ids(70000, 1000, 69001, 0)


# ---------------------------------------------------------------- published split lists

PUBLISHED = {  # DeepHash-pytorch's layout: train is part of the database, test is apart
    "database": ["a.png", "sub/b.png", "c.png", "f.png"],
    "train": ["a.png", "c.png"],
    "test": ["sub/e.png", "d.png"],  # d.png has no label: dropped from its split too
}


def _published(folder: Path, pair: bool) -> Path:
    _images(folder)
    labels = dict(ROWS)
    for split, paths in PUBLISHED.items():
        rows = [(p, " ".join(map(str, labels[p]))) for p in paths]
        if pair:
            (folder / f"{split}_img.txt").write_text("".join(f"{p}\n" for p, _ in rows))
            (folder / f"{split}_label.txt").write_text("".join(f"{lab}\n" for _, lab in rows))
        else:
            (folder / f"{split}.txt").write_text("".join(f"{p} {lab}\n" for p, lab in rows))
    return folder


@pytest.mark.parametrize("pair", [False, True])
def test_published_splits_are_used_as_published(tmp_path: Path, pair: bool) -> None:
    folder = _published(tmp_path / "data", pair)
    cfg = DataConfig(dataset="nuswide", data_dir=str(folder), num_query=1, num_train=1, num_database=2)
    images = open_dataset(cfg, tmp_path / "work", 32)
    splits = make_splits(images, cfg, tmp_path / "splits.json")
    named = {k: sorted(images.paths[i] for i in getattr(splits, k)) for k in ("query", "train", "database")}
    assert named == {
        "query": ["sub/e.png"],
        "train": ["a.png", "c.png"],
        "database": ["a.png", "c.png", "f.png", "sub/b.png"],
    }  # the sizes in the config play no part
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["source"] == "published" and saved["database"] == splits.database.tolist()
    # a redraw only when asked: then the sizes apply
    redraw = DataConfig(**{**cfg.__dict__, "redraw_splits": True})
    drawn = make_splits(open_dataset(redraw, tmp_path / "work", 32), redraw, tmp_path / "drawn.json")
    assert (len(drawn.query), len(drawn.train), len(drawn.database)) == (1, 1, 2)
    # sizes left at 0 size the redraw to the data (split_sizes): 5 labelled images -> 1 / 4 / 4
    auto = DataConfig(dataset="nuswide", data_dir=str(folder), redraw_splits=True)
    drawn = make_splits(open_dataset(auto, tmp_path / "work", 32), auto, tmp_path / "auto.json")
    assert (len(drawn.query), len(drawn.train), len(drawn.database)) == (1, 4, 4)
    assert not np.intersect1d(drawn.query, drawn.database).size


def test_published_lists_without_train_or_query(tmp_path: Path, caplog) -> None:
    folder = _published(tmp_path / "data", pair=False)
    (folder / "train.txt").unlink()
    cfg = DataConfig(dataset="flickr25k", data_dir=str(folder), num_query=1, num_train=3, seed=5)
    images = open_dataset(cfg, tmp_path / "work", 32)
    splits = make_splits(images, cfg, tmp_path / "s.json")
    assert [images.paths[i] for i in splits.query] == ["sub/e.png"]
    assert len(splits.train) == 3 and np.isin(splits.train, splits.database).all()  # drawn from the list
    whole = DataConfig(dataset="flickr25k", data_dir=str(folder))  # num_train 0: the whole list
    assert make_splits(images, whole, tmp_path / "w.json").train.tolist() == splits.database.tolist()
    (folder / "test.txt").unlink()  # no query list: nothing to keep, the splits are drawn
    with caplog.at_level(logging.INFO):
        images = open_dataset(cfg, tmp_path / "work", 32)
    assert images.published == {} and "its splits will be drawn" in caplog.text
    (folder / "test.txt").write_text("a.png 1 0 0\n")
    (folder / "query.txt").write_text("c.png 1 1 0\n")
    with pytest.raises(ValueError, match="two list files give the query split"):
        open_dataset(cfg, tmp_path / "work", 32)
