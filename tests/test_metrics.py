import numpy as np
import pytest

from retrieval.core.codes import pack
from retrieval.core.metrics import mean_average_precision


def codes(*rows):
    return pack(np.array(rows))


Q = codes([1] * 8)
# distances to Q: 0, 1, 1, 8
DB = codes([1] * 8, [1] * 7 + [-1], [1] * 7 + [-1], [-1] * 8)


def test_map_by_hand_with_ties_broken_by_id():
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    # ranking by (distance, id): 0 (irrelevant), 1 (relevant), 2 (irrelevant), 3 (relevant)
    # AP = (1/2 + 2/4) / 2 = 0.5
    assert mean_average_precision(Q, [[1, 0]], DB, labels).map == pytest.approx(0.5)
    # swapping the ids of the tied items 1 and 2 puts the irrelevant one first:
    # ranking 0, 2(irr), 1(rel), 3(rel): AP = (1/3 + 2/4) / 2
    ids = np.array([0, 2, 1, 3])
    assert mean_average_precision(Q, [[1, 0]], DB, labels, db_ids=ids).map == pytest.approx((1 / 3 + 0.5) / 2)


def test_map_at_k_and_no_relevant_queries_count_as_zero():
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    # top 2: irrelevant, relevant -> AP@2 = (1/2) / 1
    assert mean_average_precision(Q, [[1, 0]], DB, labels, topk=2).map == pytest.approx(0.5)
    # a second query whose label no database item carries scores 0 and halves the mean
    res = mean_average_precision(
        codes([1] * 8, [1] * 8), [[1, 0, 0], [0, 0, 1]], DB, np.c_[labels, np.zeros(4)], topk=2
    )
    assert res.ap.tolist() == pytest.approx([0.5, 0.0])
    assert res.map == pytest.approx(0.25)
    assert res.no_relevant == 1


def test_multi_label_relevance_is_sharing_any_label():
    labels = np.array([[1, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    # query carries labels {0, 2}: relevant items 0, 1, 3 -> ranking 0(rel) 1(rel) 2(irr) 3(rel)
    ap = (1 + 1 + 3 / 4) / 3
    assert mean_average_precision(Q, [[1, 0, 1]], DB, labels).map == pytest.approx(ap)


def test_map_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    q, n, bits, nlab = 7, 50, 16, 4
    qc = pack(rng.choice([-1, 1], size=(q, bits)))
    dc = pack(rng.choice([-1, 1], size=(n, bits)))
    ql = rng.integers(0, 2, size=(q, nlab))
    dl = rng.integers(0, 2, size=(n, nlab))
    ids = rng.permutation(n) + 100
    got = mean_average_precision(qc, ql, dc, dl, db_ids=ids, topk=20).ap
    qb, db = np.unpackbits(qc, axis=1), np.unpackbits(dc, axis=1)
    for i in range(q):
        dist = [(int((qb[i] != db[j]).sum()), int(ids[j]), j) for j in range(n)]
        ranked = [j for _, _, j in sorted(dist)][:20]
        rel = [bool((ql[i] & dl[j]).any()) for j in ranked]
        hits, total = 0, 0.0
        for r, is_rel in enumerate(rel, 1):
            if is_rel:
                hits += 1
                total += hits / r
        assert got[i] == pytest.approx(total / hits if hits else 0.0)
