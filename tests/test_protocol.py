"""The benchmark protocol of evaluation.protocol: target label vectors on multi-label data (DHTA,
ProS-GAN), one target label on single-label data, and t-MAP against the target vector, checked
by hand on tiny label sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.protocol import draw_sample, is_multi_label, t_map
from index_builder.imagelist import ImageList
from index_builder.splits import Splits
from privacy.targets import pick_target_label
from retrieval.core.codes import pack


def _list(labels: list[list[int]]) -> ImageList:
    arr = np.array(labels, dtype=np.uint8)
    names = tuple("abcd"[: arr.shape[1]])
    return ImageList(Path("/nowhere"), tuple(f"{i}.png" for i in range(len(arr))), arr, names)


def test_t_map_against_a_label_vector_by_hand() -> None:
    """Query code 0; database at distances 0..4 (ids out of row order); target vector {a, b}."""
    bits = np.zeros((5, 16))
    for row, d in enumerate((2, 0, 4, 1, 3)):
        bits[row, :d] = 1
    db_codes = pack(bits * 2 - 1)
    db_ids = np.array([12, 10, 14, 11, 13])
    db_labels = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=np.uint8)
    query = pack(-np.ones((1, 16)))
    # ranking: 10 {a} (d0), 11 {c} (d1), 12 {c} (d2), 13 {a,b} (d3), 14 {b,c} (d4)
    # relevant to {a, b} (shares a label): ranks 1, 4, 5 -> AP = (1/1 + 2/4 + 3/5) / 3
    result = t_map(query, np.array([[1, 1, 0]], dtype=np.uint8), db_codes, db_labels, db_ids)
    assert result.map == pytest.approx((1 + 2 / 4 + 3 / 5) / 3)
    # the vector {c}: ranks 2, 3, 5 -> (1/2 + 2/3 + 3/5) / 3; the same as the label column 2
    want = (1 / 2 + 2 / 3 + 3 / 5) / 3
    assert t_map(
        query, np.array([[0, 0, 1]], dtype=np.uint8), db_codes, db_labels, db_ids
    ).map == pytest.approx(want)
    assert t_map(query, np.array([2]), db_codes, db_labels, db_ids).map == pytest.approx(want)
    # a top-2 cut: 10 {a} relevant at rank 1, 11 not -> AP@2 = 1
    assert t_map(query, np.array([[1, 1, 0]], dtype=np.uint8), db_codes, db_labels, db_ids, topk=2).map == 1.0
    with pytest.raises(ValueError, match="0/1 of shape"):
        t_map(query, np.array([[1, 2, 0]]), db_codes, db_labels, db_ids)


def test_multi_label_targets_are_vectors_that_anchors_carry_exactly() -> None:
    # database: 3 x {a}, 3 x {a, b}, 3 x {b, c}, 2 x {c} (too few for n_anchor = 3), 1 x {a, b, c}
    db = [[1, 0, 0]] * 3 + [[1, 1, 0]] * 3 + [[0, 1, 1]] * 3 + [[0, 0, 1]] * 2 + [[1, 1, 1]]
    queries = [[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]]
    images = _list(queries + db)
    splits = Splits(np.arange(4), np.arange(4, 16), np.arange(4, 16), 0)
    assert is_multi_label(images.labels)
    sample = draw_sample(images, splits, 4, 3, seed=0)
    assert sample.multi_label
    allowed = {(1, 0, 0), (1, 1, 0), (0, 1, 1)}  # the vectors >= 3 database items carry
    db_labels = images.labels[splits.database]
    for own, target, rows, p2p in zip(
        sample.labels, sample.target_labels, sample.anchor_rows, sample.p2p_row
    ):
        assert tuple(target) in allowed and not np.array_equal(target, own)
        assert (db_labels[rows] == target).all()  # anchors carry exactly the target vector
        assert len(set(rows.tolist())) == 3 and p2p in rows
    # over many seeds every allowed vector other than the query's own is drawn, and nothing else
    seen = {tuple(draw_sample(images, splits, 4, 3, seed=s).target_labels[0]) for s in range(40)}
    assert seen == allowed - {(1, 1, 0)}
    with pytest.raises(ValueError, match="no label vector other than"):
        draw_sample(images, splits, 4, 4, seed=0)


def test_single_label_targets_stay_one_label() -> None:
    db = [[1, 0, 0]] * 4 + [[0, 1, 0]] * 4 + [[0, 0, 1]] * 2
    images = _list([[1, 0, 0], [0, 1, 0]] + db)
    splits = Splits(np.arange(2), np.arange(2, 12), np.arange(2, 12), 0)
    sample = draw_sample(images, splits, 2, 3, seed=7)
    assert not sample.multi_label
    # the same draws as pick_target_label with the same generator (the protocol before vectors)
    rng = np.random.default_rng(7)
    index = np.sort(rng.choice(splits.query, size=2, replace=False))
    counts = {"a": 4, "b": 4, "c": 2}
    for i, target in zip(index, sample.target_labels):
        label = pick_target_label(images.label_sets([i])[0], counts, 3, rng)
        column = "abc".index(label)
        assert target.tolist() == [int(j == column) for j in range(3)]
        rows = np.sort(
            rng.choice(np.flatnonzero(images.labels[splits.database][:, column]), 3, replace=False)
        )
        rng.integers(3)  # the P2P pick
    np.testing.assert_array_equal(sample.anchor_rows[-1], rows)
