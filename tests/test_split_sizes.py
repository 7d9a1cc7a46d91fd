"""Split sizes that fit the data (index_builder.splits): 0 sizes a split to the data set, explicit
sizes are taken as given, the demo's splits stay exactly as they were, and checkpoints trained
before the change still match."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pytest

from index_builder.dpsh import card_matches
from index_builder.splits import make_splits, split_sizes
from retrieval.core.config import Config, DataConfig, override


@dataclass(frozen=True)
class _Images:
    """What make_splits reads of an ImageList."""

    n: int
    labelled: bool = True
    published: dict = field(default_factory=dict)  # no published split lists: the splits are drawn

    def __len__(self) -> int:
        return self.n

    def paths_sha256(self) -> str:
        return f"{self.n:064x}"


@pytest.mark.parametrize(
    ("n", "cfg", "expected"),
    [
        (600, {}, (60, 540, 540)),  # the folder: 10 % query instead of "got 1000"
        (21_000, {}, (1000, 20_000, 20_000)),  # the demo's export
        (100_000, {}, (1000, 99_000, 20_000)),  # query and train capped
        (3, {}, (1, 2, 2)),
        (2, {}, (1, 1, 1)),
        (600, {"num_query": 500}, (500, 100, 100)),
        (600, {"num_database": 300}, (60, 300, 300)),
        (600, {"num_train": 50}, (60, 540, 50)),
    ],
)
def test_sizes_scale_with_the_data(n: int, cfg: dict, expected: tuple[int, int, int]) -> None:
    sizes = split_sizes(n, DataConfig(**cfg))
    assert (sizes.query, sizes.database, sizes.train) == expected


def test_explicit_sizes_that_do_not_fit_are_errors() -> None:
    with pytest.raises(ValueError, match="num_query must be less than the 600 images; got 600"):
        split_sizes(600, DataConfig(num_query=600))
    with pytest.raises(ValueError, match="num_train must be at most the database size 540; got 541"):
        split_sizes(600, DataConfig(num_train=541))
    with pytest.raises(ValueError, match="needs at least 2 images"):
        split_sizes(1, DataConfig())


def _old_draw(n: int, num_query: int, num_train: int, num_database: int, seed: int):
    """The split rule before sizes scaled with the data (explicit sizes only), as a reference."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    database = order[num_query:]
    if num_database > 0:
        database = database[:num_database]
    train = rng.choice(database, size=num_train, replace=False)
    return [np.sort(a) for a in (order[:num_query], train, database)]


def test_the_demos_splits_are_the_same_and_its_saved_file_is_reused(tmp_path, caplog) -> None:
    images = _Images(21_000)
    query, train, database = _old_draw(21_000, 1000, 20_000, 20_000, 0)
    saved = {
        "version": 1,
        "seed": 0,
        "n": 21_000,
        "num_query": 1000,
        "num_train": 20_000,
        "num_database": 20_000,
        "paths_sha256": images.paths_sha256(),
        "query": query.tolist(),
        "train": train.tolist(),
        "database": database.tolist(),
    }
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(saved))  # as the demo's var/splits.json was written
    with caplog.at_level(logging.INFO):
        reused = make_splits(images, DataConfig(), path)
    assert "reusing splits" in caplog.text and json.loads(path.read_text()) == saved
    drawn = make_splits(images, DataConfig(), tmp_path / "fresh.json")  # drawn again from the seed
    for splits in (reused, drawn):
        for got, want in zip((splits.query, splits.train, splits.database), (query, train, database)):
            np.testing.assert_array_equal(got, want)


def test_the_chosen_sizes_are_logged_and_saved(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        splits = make_splits(_Images(600), DataConfig(seed=3), tmp_path / "s.json")
    assert "splits of 600 images: 60 query, 540 database, 540 train" in caplog.text
    saved = json.loads((tmp_path / "s.json").read_text())
    assert (saved["num_query"], saved["num_train"], saved["num_database"]) == (60, 540, 540)
    assert (
        not np.intersect1d(splits.query, splits.database).size
        and np.isin(splits.train, splits.database).all()
    )
    assert len(np.union1d(splits.query, splits.database)) == 600


def test_checkpoints_trained_with_explicit_sizes_still_match() -> None:
    """The demo's model card records 1000 / 20000 / 20000 and no layout; the new defaults are 0 and auto."""
    old_card = {
        "model": {
            "backbone": "efficientnet_lite0",
            "hash_bits": 32,
            "image_size": 96,
            "freeze_backbone": True,
            "pretrained": "",
        },
        "data": {
            "dataset": "fashion_mnist",
            "data_dir": "",
            "num_query": 1000,
            "num_train": 20000,
            "num_database": 20000,
            "seed": 0,
        },
        "train": {"epochs": 30, "batch_size": 128, "lr": 0.0001, "eta": 0.1, "map_topk": 0},
    }
    assert card_matches(old_card, Config())
    assert card_matches(old_card, override(Config(), data={"num_query": 1000}))
    assert not card_matches(old_card, override(Config(), data={"num_query": 500}))
    assert not card_matches(old_card, override(Config(), data={"layout": "flat"}))
    assert not card_matches(old_card, override(Config(), train={"epochs": 3}))
    assert not card_matches({}, Config())
